"""Rule generate_mitigations: mitigated generations of one chunk of prompts (GPU when present)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd
import torch

from memaudit.atomic import write_atomically
from memaudit.mitigation.generation import generate_chunk
from memaudit.mitigation.spec import MitigationSpec
from memaudit.model.loading import load_model
from memaudit.scoring.spec import ScoringSpec

torch.set_num_threads(snakemake.threads)
index, total = map(int, snakemake.wildcards.scatteritem.split("-of-"))
vocabulary = Path(snakemake.input.vocabulary).read_text(encoding="utf-8").split()
stats = generate_chunk(
    load_model(snakemake.params.model),
    pd.read_parquet(snakemake.input.prompts),
    index - 1,
    total,
    MitigationSpec.from_dict(snakemake.params.mitigation),
    ScoringSpec.from_dict(snakemake.params.scoring),
    list(snakemake.params.markers),
    vocabulary,
    snakemake.output.images,
    snakemake.output.index,
    progress=sys.stderr,
)
write_atomically({snakemake.output.stats: stats})
print(json.dumps(stats, indent=2, default=str))
