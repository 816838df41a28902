"""Rule plot_token_attribution: Fig. 3, the most significant words of memorized prompts."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.attribution.figures import plot_token_attribution

plot_token_attribution(
    pd.read_parquet(snakemake.input.words),
    pd.read_parquet(snakemake.input.prompts),
    snakemake.output.png,
    n_prompts=snakemake.params.n_prompts,
    top_n=snakemake.params.top_n,
)
