"""Rule plot_training_curve: the demo model's loss per training step."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

from memaudit.model.artifacts import load_losses
from memaudit.model.figures import plot_training_curve

plot_training_curve(load_losses(snakemake.input.model), snakemake.output.png)
