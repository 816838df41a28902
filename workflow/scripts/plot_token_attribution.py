"""Rule plot_token_attribution: Fig. 3, one memorized prompt's words by the primary method,
beside every method on the same prompt."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.attribution.figures import plot_token_attribution
from memaudit.attribution.spec import METHOD_LABELS
from memaudit.attribution.words import key_span

prompts = pd.read_parquet(snakemake.input.prompts)
spans = {}
if snakemake.input.key_check:
    keys = pd.read_parquet(snakemake.input.key_check[0])
    text_of = dict(zip(prompts["prompt_id"], prompts["text"], strict=True))
    for key in keys[keys["causal"]].itertuples(index=False):
        if key.prompt_id in text_of:
            spans[key.prompt_id] = key_span(text_of[key.prompt_id], key.key_text, key.prompt_id)
plot_token_attribution(
    pd.read_parquet(snakemake.input.methods),
    prompts,
    json.loads(Path(snakemake.input.summary).read_text())["primary_method"],
    snakemake.output.png,
    top_n=snakemake.params.top_n,
    key_spans=spans,
    labels=METHOD_LABELS,
)
