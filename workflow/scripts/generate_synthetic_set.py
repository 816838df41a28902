"""Rule generate_synthetic_set: one chunk of the synthetic set (GPU when present)."""

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
from memaudit.synthetic.sampling import generate_chunk
from memaudit.synthetic.spec import SyntheticSpec

torch.set_num_threads(snakemake.threads)
index, total = map(int, snakemake.wildcards.scatteritem.split("-of-"))
stats = generate_chunk(
    load_model(snakemake.params.model),
    pd.read_parquet(snakemake.input.prompts),
    index - 1,
    total,
    SyntheticSpec.from_dict(snakemake.params.synthetic),
    snakemake.output.images,
    snakemake.output.index,
    source=str(snakemake.input.prompts),
    progress=sys.stderr,
)
write_atomically({snakemake.output.stats: stats})
print(json.dumps(stats, indent=2, default=str))
