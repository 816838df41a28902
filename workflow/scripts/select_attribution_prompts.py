"""Rule select_attribution_prompts: memorized prompts (+ planted ones on the demo), with why."""

import json
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))

import pandas as pd

from memaudit.attribution import select_prompts

truth = snakemake.input.get("truth")
table, counts = select_prompts(
    pd.read_parquet(snakemake.input.memorized),
    pd.read_parquet(snakemake.input.ranked),
    pd.read_parquet(truth) if truth else None,
    include_planted=snakemake.params.include_planted,
)
table.to_parquet(snakemake.output.prompts, index=False)
Path(snakemake.output.counts).write_text(json.dumps(counts, indent=2) + "\n")
print(json.dumps(counts, indent=2))
