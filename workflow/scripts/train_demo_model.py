"""Rule train_demo_model: train the demo model organism on the demo corpus (no figures: the
plot rules draw what it saves)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import numpy as np
import pandas as pd
import torch

from memaudit.model.spec import TrainSpec
from memaudit.model.training import demo_training_pairs, train_demo_model

torch.set_num_threads(snakemake.threads)
inputs = snakemake.input
captions, pair_images = demo_training_pairs(
    pd.read_parquet(inputs.studies),
    pd.read_parquet(inputs.report_map),
    pd.read_parquet(inputs.prompts),
    np.load(inputs.images),
)
train_demo_model(
    captions,
    pair_images,
    # the model's image side follows the corpus (demo.image_size)
    TrainSpec.from_dict({**snakemake.params.train, "image_size": int(pair_images.shape[-1])}),
    snakemake.output.model,
    corpus_hash=json.loads(Path(inputs.corpus).read_text())["sha256"],
    log=sys.stderr,
)
