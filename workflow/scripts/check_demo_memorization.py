"""Rule check_demo_memorization: do planted captions reproduce their one training image?"""

import json
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))

import numpy as np
import pandas as pd
import torch

from memaudit.model.check import check_memorization
from memaudit.model.loading import load_model
from memaudit.model.training import demo_training_pairs

torch.set_num_threads(snakemake.threads)
inputs = snakemake.input
captions, images = demo_training_pairs(
    pd.read_parquet(inputs.studies),
    pd.read_parquet(inputs.report_map),
    pd.read_parquet(inputs.prompts),
    np.load(inputs.images),
)
summary, table = check_memorization(
    load_model({"kind": "demo", "path": inputs.model}),
    pd.read_parquet(inputs.truth),
    captions,
    images,
    steps=snakemake.params.steps,
    guidance=snakemake.params.guidance,
)
table.to_parquet(snakemake.output.table, index=False)
Path(snakemake.output.summary).write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
