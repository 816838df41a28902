"""Rule gather_synthetic_set: the whole synthetic set from its chunks, with the planted flag."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.atomic import write_atomically
from memaudit.synthetic.chunks import gather_chunks, generation_summary, write_chunk

truth = list(snakemake.input.truth)
planted = pd.read_parquet(truth[0])["prompt_id"] if truth else None
table, images = gather_chunks(
    list(snakemake.input.index),
    list(snakemake.input.images),
    n_images=snakemake.params.n_images,
    planted_ids=planted,
)
write_chunk(table, images, snakemake.output.images, snakemake.output.index)
stats = generation_summary([json.loads(Path(p).read_text()) for p in snakemake.input.stats])
write_atomically({snakemake.output.stats: stats})
print(
    f"gathered {len(table)} images of {table['prompt_id'].nunique()} prompts from "
    f"{len(snakemake.input.stats)} chunks ({int(table['planted'].sum())} of planted captions); "
    f"{stats['images_per_s'] or 0:.2f} images/s"
)
