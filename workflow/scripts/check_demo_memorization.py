"""Rule check_demo_memorization: do planted captions reproduce their one training image?"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import numpy as np
import pandas as pd
import torch

from memaudit.atomic import atomic_parquet, atomic_write
from memaudit.model.artifacts import write_generations
from memaudit.model.check import check_memorization
from memaudit.model.loading import load_model
from memaudit.model.training import demo_training_pairs

torch.set_num_threads(snakemake.threads)
inputs, outputs = snakemake.input, snakemake.output
captions, images = demo_training_pairs(
    pd.read_parquet(inputs.studies),
    pd.read_parquet(inputs.report_map),
    pd.read_parquet(inputs.prompts),
    np.load(inputs.images),
)
summary, table, generations = check_memorization(
    load_model({"kind": "demo", "path": inputs.model}),
    pd.read_parquet(inputs.truth),
    captions,
    images,
    steps=snakemake.params.steps,
    guidance=snakemake.params.guidance,
)
atomic_parquet(table, outputs.table)
write_generations(generations, outputs.generations, outputs.index)
text = json.dumps(summary, indent=2) + "\n"
atomic_write(outputs.summary, lambda handle: handle.write(text.encode()))
print(text, end="")
