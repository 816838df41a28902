"""Rule plot_synthetic_copies: the most similar synthetic copies beside their training images."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.copy_detection.images import training_image_loader
from memaudit.synthetic.chunks import read_chunk
from memaudit.synthetic.figures import plot_synthetic_copies

summary = json.loads(Path(snakemake.input.summary).read_text())
_, images = read_chunk(snakemake.input.images, snakemake.input.index)
loader = None
if snakemake.input.get("train_index"):
    loader = training_image_loader(
        pd.read_parquet(snakemake.input.train_index), snakemake.input.get("train_pixels")
    )
plot_synthetic_copies(
    pd.read_parquet(snakemake.input.copies),
    images,
    snakemake.output.png,
    n_shown=snakemake.params.n_shown,
    training_image=loader,
    threshold=summary.get("threshold"),
)
