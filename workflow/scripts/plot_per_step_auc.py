"""Rule plot_per_step_auc: AUC of every sampling step alone and of the first k steps."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.evaluation.figures import plot_per_step_auc

plot_per_step_auc(pd.read_parquet(snakemake.input.per_step), snakemake.output.png)
