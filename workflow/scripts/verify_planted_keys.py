"""Rule verify_planted_keys: does each planted key alone make its prompt memorized? (GPU)"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import numpy as np
import pandas as pd
import torch

from memaudit.atomic import json_text, write_atomically
from memaudit.attribution.keys import KeyCheckSpec, verify_planted_keys
from memaudit.model.loading import load_model
from memaudit.model.training import demo_training_pairs
from memaudit.scoring.spec import ScoringSpec

torch.set_num_threads(snakemake.threads)
inputs, outputs, params = snakemake.input, snakemake.output, snakemake.params
captions, images = demo_training_pairs(
    pd.read_parquet(inputs.studies),
    pd.read_parquet(inputs.report_map),
    pd.read_parquet(inputs.prompts),
    np.load(inputs.images),
)
table, summary = verify_planted_keys(
    load_model(params.model),
    pd.read_parquet(inputs.truth),
    pd.read_parquet(inputs.scores, columns=["prompt_id", "d_mem"]),
    ScoringSpec.from_dict(params.scoring),
    captions,
    images,
    KeyCheckSpec.from_dict(params.key_check),
    progress=sys.stderr,
)
write_atomically({outputs.table: table, outputs.summary: summary})
print(json_text(summary), end="")
