"""Rule make_share_bundle: results/share/, the audit's numbers without any report text."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.share import build_share_bundle, read_secret

inputs = snakemake.input
share = snakemake.params.share
named = set(inputs.keys())  # a Namedlist: `in` alone would test its values
stages = ["prompts", "threshold", "attribution", "mitigation"]
stages += ["detection"] if "detection" in named else []  # the demo's planted truth only
summaries = {name: json.loads(Path(inputs[name]).read_text()) for name in stages}
written = build_share_bundle(
    Path(snakemake.output.readme).parent,
    prompts=pd.read_parquet(inputs.prompt_table, columns=["prompt_id", "text"]),
    ranked=pd.read_parquet(inputs.ranked),
    report_map=pd.read_parquet(inputs.report_map),
    stage_summaries=summaries,
    secret=read_secret(inputs.secret),
    word_types=pd.read_parquet(inputs.word_types),
    figures=list(inputs.figures),
    min_word_prompts=share["min_word_prompts"],
    min_words=share["leak_check_words"],
    study_ids=share["study_ids"],
)
print(json.dumps(written, indent=2))
