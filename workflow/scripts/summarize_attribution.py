"""Rule summarize_attribution: word-type statistics, the methods scored against the demo's
causal keys, and finding 3 in numbers (the controlled marker statistic)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.atomic import write_atomically
from memaudit.attribution.spec import AttributionSpec
from memaudit.attribution.statistics import (
    method_comparison,
    summarize_attribution,
    word_type_table,
)

spec = AttributionSpec.from_dict(snakemake.params.attribution)
inputs = snakemake.input
words = pd.read_parquet(inputs.words)
occlusion = pd.read_parquet(inputs.occlusion)
prompts = pd.read_parquet(inputs.prompts)
methods = pd.read_parquet(inputs.methods)
keys = pd.read_parquet(inputs.key_check[0]) if inputs.key_check else None
truth = pd.read_parquet(inputs.truth[0]) if inputs.truth else None
origin = dict(zip(truth["prompt_id"], truth["kind"], strict=True)) if truth is not None else {}
stats = [json.loads(Path(p).read_text()) for p in inputs.stats]
word_types = word_type_table(words, occlusion, prompts, spec)
comparison, _ = method_comparison(methods, prompts, keys, stats, spec)
summary = summarize_attribution(
    words,
    occlusion,
    prompts,
    word_types,
    json.loads(Path(inputs.selection).read_text()),
    stats,
    spec,
    methods=methods,
    keys=keys,
    origin=origin,
)
write_atomically(
    {
        snakemake.output.word_types: word_types,
        snakemake.output.summary: summary,
        snakemake.output.comparison: comparison,
    }
)
print(json.dumps(summary, indent=2))
