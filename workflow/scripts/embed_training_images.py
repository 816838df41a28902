"""Rule embed_training_images: training-image embeddings and the held-out reference."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import numpy as np
import pandas as pd
import torch

from memaudit.copy_detection.reference import build_reference

torch.set_num_threads(snakemake.threads)
cfg = dict(snakemake.params.copy_detection)
# Only whether a threshold is fixed matters here (an empty held-out set is then allowed); its
# value is not a param, so a new fixed threshold re-runs no embedding.
cfg["threshold"] = 0.0 if snakemake.params.fixed_threshold else None
demo = None
if not cfg["train_images"]:
    demo = {
        "studies": pd.read_parquet(snakemake.input.studies),
        "report_map": pd.read_parquet(snakemake.input.report_map),
        "images": np.load(snakemake.input.images),
        "heldout": np.load(snakemake.input.heldout),
    }
meta = build_reference(
    cfg,
    snakemake.output.embeddings,
    snakemake.output.index,
    snakemake.output.heldout,
    snakemake.output.reference,
    demo=demo,
    workers=snakemake.threads,
    progress=sys.stderr,
)
print(json.dumps(meta, indent=2))
