"""Rule evaluate_detection: AUC, TPR at 1 % FPR, precision@k and per-step AUC vs the truth."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.atomic import write_atomically
from memaudit.evaluation.detection import evaluate_truth

scores = pd.read_parquet(snakemake.input.scores)
metrics, per_step = evaluate_truth(
    scores,
    pd.read_parquet(snakemake.input.truth),
    n_generations=int(scores["n_generations"].iloc[0]),
    n_steps=int(scores["n_steps"].iloc[0]),
    top_k=snakemake.params.top_k,
)
write_atomically({snakemake.output.per_step: per_step, snakemake.output.metrics: metrics})
print(json.dumps(metrics, indent=2))
