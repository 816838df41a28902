"""Rule plot_attribution_methods: every method's key top-1 rate against its cost (demo)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.attribution.figures import plot_method_comparison

plot_method_comparison(pd.read_parquet(snakemake.input.comparison), snakemake.output.png)
