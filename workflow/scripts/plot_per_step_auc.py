"""Rule plot_per_step_auc: AUC of every sampling step alone and of the first k steps."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))

import pandas as pd

from memaudit.evaluation.figures import plot_per_step_auc

plot_per_step_auc(pd.read_parquet(snakemake.input.per_step), snakemake.output.png)
