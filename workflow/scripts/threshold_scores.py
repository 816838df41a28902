"""Rule threshold_scores: memorized prompts and the marker-enrichment numbers (finding 2)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.atomic import write_atomically
from memaudit.threshold.cutoff import threshold_scores
from memaudit.threshold.enrichment import marker_enrichment

cfg = snakemake.params.threshold
table, threshold = threshold_scores(
    pd.read_parquet(snakemake.input.scores, columns=["prompt_id", "d_mem", "score"]),
    pd.read_parquet(snakemake.input.prompts),
    method=cfg["method"],
    percentile=cfg["percentile"],
    z=cfg["z"],
    value=cfg["value"],
    column="score",  # the primary detector's (scoring.primary)
)
stats = {
    "method": cfg,
    "detector": snakemake.params.primary,
    "threshold": threshold,
    **marker_enrichment(table),
}
write_atomically(
    {
        snakemake.output.ranked: table,
        snakemake.output.memorized: table[table["memorized"]],
        snakemake.output.stats: stats,
    }
)
print(json.dumps(stats, indent=2))
