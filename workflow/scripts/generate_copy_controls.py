"""Rule generate_copy_controls: ordinary prompts generated as the original strategy (GPU)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import numpy as np
import pandas as pd
import torch

from memaudit.atomic import atomic_write, write_atomically
from memaudit.copy_detection.controls import control_spec, generate_controls, select_controls
from memaudit.model.loading import load_model

torch.set_num_threads(snakemake.threads)
params = dict(snakemake.params.controls)
truth = pd.read_parquet(snakemake.input.truth[0]) if list(snakemake.input.truth) else None
spec = control_spec(params)
controls, counts = select_controls(
    pd.read_parquet(snakemake.input.ranked), truth, params["n"], spec.seed
)
images, stats = generate_controls(load_model(snakemake.params.model), controls, spec, sys.stderr)
stats["selection"] = counts
atomic_write(snakemake.output.images, lambda handle: np.savez_compressed(handle, images=images))
write_atomically({snakemake.output.prompts: controls, snakemake.output.stats: stats})
print(json.dumps(stats, indent=2, default=str))
