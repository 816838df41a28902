"""Rule gather_attribution: one token, word, occlusion, prompt and method table from the chunks."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.atomic import write_atomically
from memaudit.attribution.tables import gather_tables

tables = gather_tables(
    {
        kind: list(getattr(snakemake.input, kind))
        for kind in ("tokens", "words", "occlusion", "prompts", "methods")
    },
    expected_ids=pd.read_parquet(snakemake.input.selected, columns=["prompt_id"])["prompt_id"],
    word_score=snakemake.params.word_score,
)
write_atomically(
    {
        snakemake.output.tokens: tables.tokens,
        snakemake.output.words: tables.words,
        snakemake.output.occlusion: tables.occlusion,
        snakemake.output.prompts: tables.prompts,
        snakemake.output.methods: tables.methods,
    }
)
print(
    f"gathered {len(tables.prompts)} prompts, {len(tables.words)} words and "
    f"{len(tables.occlusion)} occlusion variants and {len(tables.methods)} method scores "
    f"from {len(snakemake.input.prompts)} chunks"
)
