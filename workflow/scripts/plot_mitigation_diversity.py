"""Rule plot_mitigation_diversity: diversity, mitigated d_mem and copy rate per strategy."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.mitigation.figures import plot_mitigation_diversity

document = json.loads(Path(snakemake.input.summary_json).read_text())
plot_mitigation_diversity(
    pd.read_parquet(snakemake.input.evaluation),
    pd.read_parquet(snakemake.input.summary),
    snakemake.output.png,
    snakemake.params.strategies,
    memorization_threshold=document.get("memorization_threshold"),
)
