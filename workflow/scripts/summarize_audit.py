"""Rule summarize_audit: the audit's answer on one page (summary.md) and in numbers (.json)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

import pandas as pd

from memaudit.atomic import atomic_write, json_text
from memaudit.report import audit_summary, brief_text, summary_markdown

inputs = snakemake.input


def optional(name):
    """The named input's JSON, or None for a stage this run does not have."""
    files = list(inputs[name])
    return json.loads(Path(files[0]).read_text()) if files else None


summary = audit_summary(
    **{
        name: json.loads(Path(inputs[name]).read_text())
        for name in ("prompts", "threshold", "attribution", "mitigation")
    },
    detection=optional("detection"),  # the demo's planted truth only
    copy_detection=optional("copy_detection"),
    synthetic=optional("synthetic"),
    detectors=optional("detectors"),  # the demo's planted truth only
    prompt_texts=pd.read_parquet(inputs.prompt_table, columns=["text"])["text"].astype(str),
    min_word_prompts=snakemake.params.min_word_prompts,
)
page = summary_markdown(summary)
atomic_write(snakemake.output.json, lambda handle: handle.write(json_text(summary).encode()))
atomic_write(snakemake.output.md, lambda handle: handle.write(page.encode()))
atomic_write(snakemake.output.brief, lambda handle: handle.write(brief_text(summary).encode()))
print(page)
