"""Rule evaluate_mitigations: diversity, mitigated d_mem and copy rate per prompt and strategy."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd
import torch

from memaudit.atomic import write_atomically
from memaudit.copy_detection.reference import CopyReference
from memaudit.mitigation.evaluation import (
    evaluate_generations,
    summarize_strategies,
    summary_document,
)

torch.set_num_threads(snakemake.threads)
params = snakemake.params
reference = None
if snakemake.input.get("embeddings"):
    reference = CopyReference.from_files(snakemake.input, params.percentile, params.threshold)
truth = list(snakemake.input.truth)
evaluation = evaluate_generations(
    pd.read_parquet(snakemake.input.generations),
    reference,
    pd.read_parquet(truth[0]) if truth else None,
    progress=sys.stderr,
    block=params.block,
)
threshold = json.loads(Path(snakemake.input.threshold).read_text())["threshold"]
summary = summarize_strategies(
    evaluation, params.strategies, params.bootstrap, params.seed, threshold
)
document = summary_document(
    summary,
    evaluation,
    pd.read_parquet(snakemake.input.prompts),
    json.loads(Path(snakemake.input.generation_stats).read_text()),
    reference,
    None if reference is not None else "no training images configured (copy_detection)",
    threshold,
    params.bootstrap,
)
write_atomically(
    {
        snakemake.output.evaluation: evaluation,
        snakemake.output.summary: summary,
        snakemake.output.summary_json: document,
    }
)
print(json.dumps(document, indent=2, default=str))
