"""Rule train_demo_model: train the demo model organism on the demo corpus and draw it."""

import json
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))

import numpy as np
import pandas as pd
import torch

from memaudit.model.check import grid_examples
from memaudit.model.figures import plot_generation_grid, plot_training_curve
from memaudit.model.loading import load_model
from memaudit.model.training import TrainSpec, demo_training_pairs, load_losses, train_demo_model

torch.set_num_threads(snakemake.threads)
inputs = snakemake.input
prompts = pd.read_parquet(inputs.prompts)
images = np.load(inputs.images)
captions, pair_images = demo_training_pairs(
    pd.read_parquet(inputs.studies), pd.read_parquet(inputs.report_map), prompts, images
)
card = train_demo_model(
    captions,
    pair_images,
    # the model's image side follows the corpus (demo.image_size)
    TrainSpec.from_dict({**snakemake.params.train, "image_size": int(pair_images.shape[-1])}),
    snakemake.output.model,
    corpus_hash=json.loads(Path(inputs.corpus).read_text())["sha256"],
    log=sys.stderr,
)
plot_training_curve(load_losses(snakemake.output.model), snakemake.output.curve)
model = load_model({"kind": "demo", "path": snakemake.output.model}, device="cpu")
texts, train_images, labels = grid_examples(pd.read_parquet(inputs.truth), captions, pair_images)
plot_generation_grid(model, texts, train_images, snakemake.output.grid, labels=labels)
