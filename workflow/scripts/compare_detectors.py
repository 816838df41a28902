"""Rule compare_detectors: every detector against the planted truth, with its cost."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.atomic import write_atomically
from memaudit.evaluation.detectors import compare_detectors

summary, table, roc = compare_detectors(
    pd.read_parquet(snakemake.input.scores).drop(columns="norms"),
    pd.read_parquet(snakemake.input.truth),
    [json.loads(Path(p).read_text()) for p in snakemake.input.stats],
    primary=snakemake.params.primary,
    threshold=snakemake.params.threshold,
    top_k=snakemake.params.top_k,
    resamples=snakemake.params.bootstrap,
)
write_atomically(
    {
        snakemake.output.summary: summary,
        snakemake.output.table: table,
        snakemake.output.roc: roc,
    }
)
print(table.drop(columns=["label", "published"]).to_string(index=False))
print(summary["combination"]["verdict"])
