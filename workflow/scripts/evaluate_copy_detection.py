"""Rule evaluate_copy_detection: copy recall, false copies and ROC of every embedding."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import numpy as np
import pandas as pd
import torch

from memaudit.atomic import write_atomically
from memaudit.copy_detection.reference import CopyReference
from memaudit.copy_detection.validity import (
    control_generations,
    judge,
    mitigation_originals,
    summarize_validity,
    synthetic_images,
)

torch.set_num_threads(snakemake.threads)
params, inputs = snakemake.params, snakemake.input
generations = [mitigation_originals(pd.read_parquet(inputs.generations))]
if inputs.get("control_images"):
    with np.load(inputs.control_images, allow_pickle=False) as archive:
        images = archive["images"]
    generations.append(control_generations(images, pd.read_parquet(inputs.control_prompts)))
if inputs.get("synthetic_images"):
    with np.load(inputs.synthetic_images, allow_pickle=False) as archive:
        images = archive["images"]
    generations.append(synthetic_images(images, pd.read_parquet(inputs.synthetic_index)))
truth = pd.read_parquet(inputs.truth[0]) if list(inputs.truth) else None
references, tables = {}, []
for kind in params.embeddings:
    reference = CopyReference.from_files(
        inputs, params.percentile, params.threshold, prefix=f"{kind}_"
    )
    references[kind] = reference
    tables.append(judge(kind, reference, generations, truth, params.block))
    print(f"{kind}: judged {sum(len(g.rows) for g in generations)} generations", file=sys.stderr)
table = pd.concat(tables, ignore_index=True)
summary = summarize_validity(table, references, params.bootstrap)
write_atomically({snakemake.output.generations: table, snakemake.output.summary: summary})
print(json.dumps(summary, indent=2))
