"""Rule plot_mitigation_grid: Fig. 4, generations per strategy beside the nearest training image."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.copy_detection.images import training_image_loader
from memaudit.mitigation.figures import plot_mitigation_grid

document = json.loads(Path(snakemake.input.summary_json).read_text())
loader = None
if snakemake.input.get("train_index"):
    loader = training_image_loader(
        pd.read_parquet(snakemake.input.train_index), snakemake.input.get("train_pixels")
    )
plot_mitigation_grid(
    pd.read_parquet(snakemake.input.evaluation),
    snakemake.output.png,
    snakemake.params.strategies,
    n_prompts=snakemake.params.n_prompts,
    n_seeds=snakemake.params.n_seeds,
    training_image=loader,
    copy_threshold=document.get("copy_detection", {}).get("threshold"),
)
