"""Rule plot_demo_generations: the memorization check's generations beside their training
images (planted prompts first, then frequent ordinary ones)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

from memaudit.model.artifacts import read_generations
from memaudit.model.figures import plot_generation_grid

plot_generation_grid(
    read_generations(snakemake.input.generations, snakemake.input.index), snakemake.output.png
)
