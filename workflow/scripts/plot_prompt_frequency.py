"""Rule plot_prompt_frequency: prompt frequency and marker prevalence figure."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.prompts.figures import plot_prompt_frequency

plot_prompt_frequency(
    pd.read_parquet(snakemake.input.prompts),
    json.loads(Path(snakemake.input.summary).read_text()),
    snakemake.output.png,
)
