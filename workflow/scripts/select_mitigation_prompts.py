"""Rule select_mitigation_prompts: the prompts to mitigate (and why), and the rwa vocabulary."""

import json
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))

import pandas as pd

from memaudit.mitigation.selection import select_prompts
from memaudit.mitigation.strategies import corpus_vocabulary

selection = snakemake.params.selection
markers = list(snakemake.params.markers)
truth = list(snakemake.input.truth)
prompts = select_prompts(
    pd.read_parquet(snakemake.input.memorized),
    markers,
    mode=selection["prompts"],
    sample_size=selection["sample_size"],
    seed=selection["seed"],
    truth=pd.read_parquet(truth[0]) if truth else None,
    include_planted=selection["include_planted"],
    ranked=pd.read_parquet(snakemake.input.ranked),
)
vocabulary = corpus_vocabulary(
    pd.read_parquet(snakemake.input.prompts, columns=["text"])["text"], markers
)
prompts.to_parquet(snakemake.output.prompts, index=False)
Path(snakemake.output.vocabulary).write_text("".join(f"{w}\n" for w in vocabulary))
summary = {
    "selection": selection,
    "n_prompts": len(prompts),
    "reasons": {k: int(v) for k, v in prompts["reason"].value_counts().items()},
    "with_marker": int(prompts["has_marker"].sum()),
    "vocabulary_size": len(vocabulary),
}
Path(snakemake.output.summary).write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
