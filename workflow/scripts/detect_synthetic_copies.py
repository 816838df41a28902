"""Rule detect_synthetic_copies: each synthetic image's nearest training image, copy flags and
the copy fraction of the set."""

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
from memaudit.synthetic.chunks import read_chunk
from memaudit.synthetic.copies import copy_line, detect_copies, summarize_copies

torch.set_num_threads(snakemake.threads)
params = snakemake.params
if not snakemake.input.get("embeddings"):
    raise ValueError(
        "copy detection is off (no copy_detection.train_images and no demo corpus): the "
        "synthetic set has nothing to be compared with"
    )
reference = CopyReference.from_files(snakemake.input, params.percentile, params.threshold)
index, images = read_chunk(snakemake.input.images, snakemake.input.index)
truth = list(snakemake.input.truth)
truth_table = pd.read_parquet(truth[0]) if truth else None
table = detect_copies(
    images,
    index,
    reference,
    truth_table,
    batch_size=params.batch_size,
    block=params.block,
    progress=sys.stderr,
)
summary = summarize_copies(
    table,
    reference.threshold,
    reference.percentile,
    params.bootstrap,
    params.seed,
    demo=truth_table is not None,
    embedding=reference.spec.kind,
    generation=json.loads(Path(snakemake.input.stats).read_text()),
)
write_atomically({snakemake.output.copies: table, snakemake.output.summary: summary})
print(copy_line(summary))
