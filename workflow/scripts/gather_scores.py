"""Rule gather_scores: one scores table from the chunks, checked against the prompts."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.atomic import atomic_parquet
from memaudit.scoring.gather import gather_scores

prompts = pd.read_parquet(snakemake.input.prompts, columns=["prompt_id"])
scores = gather_scores(snakemake.input.chunks, expected_ids=prompts["prompt_id"])
atomic_parquet(scores, snakemake.output.scores)
print(f"gathered {len(scores)} prompt scores from {len(snakemake.input.chunks)} chunks")
