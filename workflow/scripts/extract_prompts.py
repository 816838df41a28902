"""Rule extract_prompts: raw reports -> unique prompts, report map and summary."""

import json
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))

from memaudit.prompts.extract import extract_prompts

cfg = snakemake.params.reports
metadata = cfg["metadata"]
prompts, report_map, summary = extract_prompts(
    snakemake.input.reports,
    kind=cfg["kind"],
    text_column=cfg["text_column"],
    id_column=cfg["id_column"],
    sections=tuple(cfg["sections"]),
    markers=cfg["markers"],
    metadata=metadata,
    max_report_bytes=cfg["max_report_bytes"],
    top_n=cfg["top_n"],
)
prompts.to_parquet(snakemake.output.prompts, index=False)
report_map.to_parquet(snakemake.output.report_map, index=False)
Path(snakemake.output.summary).write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps({k: v for k, v in summary.items() if k != "most_repeated"}, indent=2))
