"""Rule gather_scores: one scores table from the chunks, checked against the prompts."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))

import pandas as pd

from memaudit.atomic import atomic_parquet
from memaudit.scoring.gather import gather_scores

prompts = pd.read_parquet(snakemake.input.prompts, columns=["prompt_id"])
scores = gather_scores(snakemake.input.chunks, expected_ids=prompts["prompt_id"])
atomic_parquet(scores, snakemake.output.scores)
print(f"gathered {len(scores)} prompt scores from {len(snakemake.input.chunks)} chunks")
