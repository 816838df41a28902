"""Rule gather_mitigations: one generations index from the chunks, checked against the prompts."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.atomic import write_atomically
from memaudit.mitigation.chunks import gather_chunks

prompts = pd.read_parquet(snakemake.input.prompts, columns=["prompt_id"])
table = gather_chunks(
    list(snakemake.input.index), list(snakemake.input.images), expected_ids=prompts["prompt_id"]
)
stats = [json.loads(Path(p).read_text()) for p in snakemake.input.stats]
write_atomically({snakemake.output.generations: table, snakemake.output.stats: stats})
print(f"gathered {len(table)} prompt x strategy rows from {len(stats)} chunks")
