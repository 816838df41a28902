"""Rule threshold_scores: memorized prompts and the marker-enrichment numbers (finding 2)."""

import json
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))

import pandas as pd

from memaudit.threshold.cutoff import threshold_scores
from memaudit.threshold.enrichment import marker_enrichment

cfg = snakemake.params.threshold
table, threshold = threshold_scores(
    pd.read_parquet(snakemake.input.scores, columns=["prompt_id", "d_mem"]),
    pd.read_parquet(snakemake.input.prompts),
    method=cfg["method"],
    percentile=cfg["percentile"],
    z=cfg["z"],
    value=cfg["value"],
)
stats = {"method": cfg, "threshold": threshold, **marker_enrichment(table)}
table.to_parquet(snakemake.output.ranked, index=False)
table[table["memorized"]].to_parquet(snakemake.output.memorized, index=False)
Path(snakemake.output.stats).write_text(json.dumps(stats, indent=2) + "\n")
print(json.dumps(stats, indent=2))
