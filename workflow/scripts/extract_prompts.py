"""Rule extract_prompts: raw reports -> unique prompt texts, report map and reading counts."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

from memaudit.atomic import write_atomically
from memaudit.prompts.extract import extract_prompts

cfg = snakemake.params.reports
texts, report_map, reading = extract_prompts(
    snakemake.input.reports,
    kind=cfg["kind"],
    text_column=cfg["text_column"],
    id_column=cfg["id_column"],
    sections=tuple(cfg["sections"]),
    rules=cfg["rules"],
    encoding=cfg["encoding"],
    metadata=cfg["metadata"],
    max_report_bytes=cfg["max_report_bytes"],
    progress=True,
)
write_atomically(
    {
        snakemake.output.texts: texts,
        snakemake.output.report_map: report_map,
        snakemake.output.reading: reading,
    }
)
print(json.dumps(reading, indent=2))
