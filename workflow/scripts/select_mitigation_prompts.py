"""Rule select_mitigation_prompts: the prompts to mitigate (and why), and the rwa vocabulary."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.atomic import atomic_write, write_atomically
from memaudit.mitigation.spec import SELECTION_MODES
from memaudit.mitigation.strategies import corpus_vocabulary
from memaudit.selection import select_prompts

selection = snakemake.params.selection
markers = list(snakemake.params.markers)
truth = list(snakemake.input.truth)
if selection["prompts"] not in SELECTION_MODES:
    raise ValueError(f"mitigation.prompts must be one of {list(SELECTION_MODES)}")
prompts, counts = select_prompts(
    pd.read_parquet(snakemake.input.memorized),
    pd.read_parquet(snakemake.input.ranked),
    pd.read_parquet(truth[0]) if truth else None,
    include_planted=selection["include_planted"],
    markers=markers,
    require_marker=selection["prompts"] == "marker_memorized",
    sample_size=selection["sample_size"],
    seed=selection["seed"],
)
vocabulary = corpus_vocabulary(
    pd.read_parquet(snakemake.input.prompts, columns=["text"])["text"], markers
)
vocabulary_text = "".join(f"{w}\n" for w in vocabulary).encode("utf-8")
atomic_write(snakemake.output.vocabulary, lambda handle: handle.write(vocabulary_text))
summary = {
    "selection": selection,
    "n_prompts": len(prompts),
    "reasons": counts["by_reason"],
    "with_marker": counts["with_marker"],
    "planted_missing": counts["planted_missing"],
    "vocabulary_size": len(vocabulary),
}
write_atomically({snakemake.output.prompts: prompts, snakemake.output.summary: summary})
print(json.dumps(summary, indent=2))
