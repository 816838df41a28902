"""Rule count_markers: de-identification markers of every prompt, and the prompts summary."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.atomic import write_atomically
from memaudit.prompts.markers import count_prompt_markers

prompts, summary = count_prompt_markers(
    pd.read_parquet(snakemake.input.texts),
    json.loads(Path(snakemake.input.reading).read_text()),
    markers=snakemake.params.markers,
    top_n=snakemake.params.top_n,
)
write_atomically({snakemake.output.prompts: prompts, snakemake.output.summary: summary})
print(json.dumps({k: v for k, v in summary.items() if k != "most_repeated"}, indent=2))
