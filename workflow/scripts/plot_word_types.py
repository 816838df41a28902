"""Rule plot_word_types: word types of memorized prompts by top-1 rate and mean rank."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.attribution.figures import plot_word_types

plot_word_types(
    pd.read_parquet(snakemake.input.word_types),
    snakemake.output.png,
    n_types=snakemake.params.n_types,
)
