"""Rule plot_detectors: ROC curves and cost against AUC of every detector."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.evaluation.figures import plot_detectors

plot_detectors(
    pd.read_parquet(snakemake.input.roc),
    pd.read_parquet(snakemake.input.table),
    snakemake.output.png,
)
