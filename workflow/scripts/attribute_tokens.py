"""Rule attribute_tokens: every attribution method on the words of one chunk (GPU)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd
import torch

from memaudit.attribution.engine import attribute_chunk
from memaudit.attribution.spec import AttributionSpec
from memaudit.model.loading import load_model

torch.set_num_threads(snakemake.threads)
index, total = map(int, snakemake.wildcards.scatteritem.split("-of-"))
spec = AttributionSpec.from_dict(snakemake.params.attribution)
stats = attribute_chunk(
    load_model(snakemake.params.model),
    pd.read_parquet(snakemake.input.prompts),
    index - 1,
    total,
    spec.scoring_spec(snakemake.params.scoring),
    spec.batch_size,
    snakemake.params.markers,
    dict(snakemake.output.items()),
    progress=sys.stderr,
    methods=spec.methods,
    ig_steps=spec.ig_steps,
    neutral_token=spec.neutral_token,
)
print(json.dumps(stats, indent=2, default=str))
