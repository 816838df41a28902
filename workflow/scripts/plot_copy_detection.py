"""Rule plot_copy_detection: ROC and similarity distributions of every copy embedding."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.copy_detection.figures import plot_copy_validity

plot_copy_validity(
    pd.read_parquet(snakemake.input.generations),
    json.loads(Path(snakemake.input.summary).read_text()),
    snakemake.output.png,
)
