"""Rule score_chunk: d_mem of one chunk of the unique prompts (GPU when present)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd
import torch

from memaudit.atomic import write_atomically
from memaudit.model.loading import load_model
from memaudit.scoring.engine import score_chunk
from memaudit.scoring.spec import ScoringSpec

torch.set_num_threads(snakemake.threads)
index, total = map(int, snakemake.wildcards.scatteritem.split("-of-"))
stats = score_chunk(
    load_model(snakemake.params.model),
    pd.read_parquet(snakemake.input.prompts, columns=["prompt_id", "text"]),
    index - 1,
    total,
    ScoringSpec.from_dict(snakemake.params.scoring),
    snakemake.output.scores,
    progress=sys.stderr,
)
write_atomically({snakemake.output.stats: stats})
print(json.dumps(stats, indent=2, default=str))
