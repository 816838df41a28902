"""Rule summarize_attribution: word-type statistics and finding 3 in numbers."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.atomic import write_atomically
from memaudit.attribution.spec import AttributionSpec
from memaudit.attribution.statistics import summarize_attribution, word_type_table

spec = AttributionSpec.from_dict(snakemake.params.attribution)
words = pd.read_parquet(snakemake.input.words)
occlusion = pd.read_parquet(snakemake.input.occlusion)
prompts = pd.read_parquet(snakemake.input.prompts)
word_types = word_type_table(words, occlusion, prompts, spec)
summary = summarize_attribution(
    words,
    occlusion,
    prompts,
    word_types,
    json.loads(Path(snakemake.input.selection).read_text()),
    [json.loads(Path(p).read_text()) for p in snakemake.input.stats],
    spec,
)
write_atomically({snakemake.output.word_types: word_types, snakemake.output.summary: summary})
print(json.dumps(summary, indent=2))
