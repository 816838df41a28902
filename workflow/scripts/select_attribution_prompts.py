"""Rule select_attribution_prompts: memorized prompts (+ planted ones on the demo), with why."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.atomic import write_atomically
from memaudit.selection import select_prompts

truth = list(snakemake.input.truth)
table, counts = select_prompts(
    pd.read_parquet(snakemake.input.memorized),
    pd.read_parquet(snakemake.input.ranked),
    pd.read_parquet(truth[0]) if truth else None,
    include_planted=snakemake.params.include_planted,
)
write_atomically({snakemake.output.prompts: table, snakemake.output.counts: counts})
print(json.dumps(counts, indent=2))
