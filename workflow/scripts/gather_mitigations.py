"""Rule gather_mitigations: one generations index from the chunks, checked against the prompts."""

import json
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))

import pandas as pd

from memaudit.atomic import atomic_parquet
from memaudit.mitigation.generation import gather_chunks

prompts = pd.read_parquet(snakemake.input.prompts, columns=["prompt_id"])
table = gather_chunks(
    list(snakemake.input.index), list(snakemake.input.images), expected_ids=prompts["prompt_id"]
)
atomic_parquet(table, snakemake.output.generations)
stats = [json.loads(Path(p).read_text()) for p in snakemake.input.stats]
Path(snakemake.output.stats).write_text(json.dumps(stats, indent=2) + "\n")
print(f"gathered {len(table)} prompt x strategy rows from {len(stats)} chunks")
