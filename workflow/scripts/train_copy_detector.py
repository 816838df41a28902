"""Rule train_copy_detector: the contrastive copy detector, trained on the training images."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import numpy as np
import pandas as pd
import torch

from memaudit.atomic import write_atomically
from memaudit.copy_detection.detector import detector_images, train_detector
from memaudit.copy_detection.spec import DetectorSpec

torch.set_num_threads(snakemake.threads)
cfg = snakemake.params.copy_detection
spec = DetectorSpec.from_config(cfg["learned"])
demo = None
if not cfg["train_images"]:
    demo = {
        "studies": pd.read_parquet(snakemake.input.studies),
        "report_map": pd.read_parquet(snakemake.input.report_map),
        "images": np.load(snakemake.input.images),
    }
images, source = detector_images(cfg, demo, spec.input_size, snakemake.threads, sys.stderr)
device = "cuda" if torch.cuda.is_available() else "cpu"
card = train_detector(images, spec, snakemake.output.weights, source, device, sys.stderr)
write_atomically({snakemake.output.card: card})
training = card["training"]
print(
    f"copy detector: {card['data']['n_images']} images, {spec.steps} steps in "
    f"{training['seconds']:.0f} s; final loss {training['final_loss']:.3f}, pair accuracy "
    f"{training['final_pair_accuracy']:.3f} (chance {training['chance_pair_accuracy']:.4f})"
)
