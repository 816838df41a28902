"""Rule plot_score_distribution: Fig. 2, all unique prompts' primary score, top 1 % in red."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.scoring.catalog import CATALOG
from memaudit.threshold.figures import plot_score_distribution

stats = json.loads(Path(snakemake.input.stats).read_text())
primary = stats["detector"]
plot_score_distribution(
    pd.read_parquet(snakemake.input.ranked, columns=["prompt_id", "score", "memorized"]),
    stats["threshold"],
    snakemake.output.png,
    log_y=snakemake.params.log_scores,
    column="score",
    label="d_mem" if primary == "wen" else CATALOG[primary].label,
)
