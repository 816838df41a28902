"""Shared fixtures of the prompts-stage tests: reports in MIMIC-CXR style, trees, zips and
tables written from them, and the two prompts rules run back to back."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pandas as pd

from memaudit.prompts.extract import SKIP_REASONS, extract_prompts
from memaudit.prompts.markers import count_prompt_markers


def mimic(text: str) -> str:
    """Report text as MIMIC-CXR writes it: blank lines hold one space, and a header alone on
    its line is followed by two spaces (kept out of the source to avoid trailing whitespace)."""
    lines = text.split("\n")
    return (
        "\n".join(
            " " if not line else line + "  " if line.endswith(":") else line for line in lines[:-1]
        )
        + "\n"
    )


# A report in MIMIC-CXR style: centred title, headers indented one space, "\n \n" blank lines.
STANDARD = mimic("""                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ year old woman with cough  // eval for pneumonia

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  ___

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  The
 cardiomediastinal silhouette is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
""")

# The same impression with different line breaks and spacing: the same prompt once normalised.
STANDARD_REWRAPPED = mimic("""                                 FINAL REPORT
 EXAMINATION:  CHEST (PORTABLE AP)

 INDICATION:  ___ with fever

 COMPARISON:  None.

 IMPRESSION:

 No acute
 cardiopulmonary   process.
""")

NO_IMPRESSION = mimic("""                                 FINAL REPORT
 INDICATION:  ___ year old man with dyspnea

 COMPARISON:  Chest radiograph from ___.

 FINDINGS:

 Mild pulmonary vascular congestion.  No pneumothorax.
""")

ADDENDUM_WITH_IMPRESSION = mimic("""                                 FINAL REPORT
 INDICATION:  Line placement.

 FINDINGS:

 Right internal jugular line ends in the upper SVC.

 IMPRESSION:

 Line in the SVC.

 ADDENDUM:  Reviewed with Dr. ___ on ___.

 IMPRESSION:

 Right internal jugular line ends in the right atrium; withdraw by 2 cm.
""")

ADDENDUM_TITLE_AFTER_IMPRESSION = mimic("""                                 FINAL REPORT
 INDICATION:  Fever.

 IMPRESSION:

 Left basilar opacity may reflect pneumonia.

                                 ADDENDUM
 Findings were telephoned to Dr. ___ at 10:15 on ___.
""")

NO_HEADERS_TWO_PARAGRAPHS = mimic("""                                 FINAL REPORT

 Portable chest radiograph.  Lungs are clear.  No pneumothorax.
""")

NO_HEADERS_ONE_PARAGRAPH = "  Lungs are clear.  No pneumothorax.\n"

# Only comparison and indication: the last paragraph of the last section is the prompt.
NO_FINDINGS_SECTION = mimic("""                                 FINAL REPORT
 INDICATION:  ___ year old with chest pain.

 COMPARISON:  ___

 Stable appearance of the chest with no acute process.
""")

# Nothing usable: one header, no impression/findings, no blank line in the last section.
NO_USABLE = """                                 FINAL REPORT
 INDICATION:  Cough."""


def assert_accounted(summary: dict) -> None:
    """Every report read is used or a counted skip with a known reason."""
    assert summary["reports_read"] == summary["reports_used"] + sum(summary["skipped"].values())
    assert set(summary["skipped"]) <= set(SKIP_REASONS)


def report_path(study: int, subject: int = 10000032) -> str:
    return f"files/p{str(subject)[:2]}/p{subject}/s{study}.txt"


def write_tree(root: Path, reports: dict[str, str | bytes]) -> Path:
    for rel, content in reports.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def write_zip(path: Path, reports: dict[str, str | bytes], prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel, content in reports.items():
            archive.writestr(prefix + rel, content)
    return path


def mixed_corpus() -> dict[str, str]:
    return {
        report_path(50000001, 10000001): STANDARD,
        report_path(50000002, 10000001): STANDARD_REWRAPPED,
        report_path(50000003, 11000002): NO_IMPRESSION,
        report_path(50000004, 11000002): ADDENDUM_WITH_IMPRESSION,
        report_path(50000005, 12000003): NO_HEADERS_TWO_PARAGRAPHS,
        report_path(50000006, 12000003): NO_USABLE,
    }


def iu_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "uid": ["1", "2", "3", "4", "5"],
            "findings": [
                "The heart is normal in size.",
                "XXXX sternotomy wires.",
                "",
                "Clear lungs.",
                "",
            ],
            "impression": [
                "Normal chest x-XXXX.",
                "",
                "No active disease.",
                "No  active\ndisease.",
                "",
            ],
        }
    )


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index=False)
    return path


def extract(
    source: str | Path, *, markers: Any = ("___",), top_n: int = 20, **kwargs: Any
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """``extract_prompts`` then ``count_markers``, as the workflow runs them: (prompts,
    report_map, summary)."""
    texts, report_map, reading = extract_prompts(source, **kwargs)
    prompts, summary = count_prompt_markers(texts, reading, markers=markers, top_n=top_n)
    return prompts, report_map, summary
