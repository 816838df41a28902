"""The HTML report of the quick demo and the shareable bundle beside it."""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from memaudit.share import find_text_leaks
from tests.conftest import QUICK, REPO, QuickRun, snakemake

pytestmark = pytest.mark.slow

# Every figure of the paper, as the workflow names it.
PAPER_FIGURES = (
    "results/figures/fig2_score_distribution.png",
    "results/figures/fig3_token_attribution.png",
    "results/figures/fig4_mitigation_grid.png",
)


def _report_outputs() -> list[tuple[str, str]]:
    """(output path, caption file) of every `report(...)` in the rules."""
    found = []
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        text = smk.read_text()
        for path, caption in re.findall(
            r'report\(\s*"([^"]+)",\s*caption="\.\./report/([^"]+)"', text
        ):
            found.append((path, caption))
    return found


@pytest.fixture(scope="module")
def report(quick_run: QuickRun, tmp_path_factory: pytest.TempPathFactory) -> str:
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(quick_run.workdir, run, symlinks=True)
    snakemake("--report", "report.html", workdir=run, overlays=(QUICK,))
    return (run / "report.html").read_text(errors="replace")


def test_every_report_output_has_a_caption_file():
    outputs = _report_outputs()
    assert len(outputs) >= 10, outputs
    for _path, caption in outputs:
        assert (REPO / "workflow/report" / caption).is_file(), caption


def test_report_holds_every_figure_of_the_paper_and_every_caption(report: str):
    for path in PAPER_FIGURES:
        assert Path(path).name in report, path
    for path, caption in _report_outputs():
        assert Path(path).name in report, path
        first_words = " ".join((REPO / "workflow/report" / caption).read_text().split()[:6])
        # captions are rendered from reStructuredText; compare a plain-text opening
        plain = re.sub(r"[`*]", "", first_words)
        assert plain.split()[0] in report, caption


def test_share_bundle_has_no_report_text(quick_run: QuickRun):
    share = quick_run.workdir / "results/share"
    texts = pd.read_parquet(quick_run.workdir / "results/prompts/prompts.parquet")["text"]
    assert (share / "README.md").read_text().startswith("# Shareable audit results")
    memorized = pd.read_parquet(share / "memorized_prompts.parquet")
    ranked = pd.read_parquet(quick_run.workdir / "results/threshold/ranked_prompts.parquet")
    assert len(memorized) == int(ranked["memorized"].sum()) > 0
    assert "text" not in memorized.columns
    for path in share.rglob("*"):
        if path.suffix == ".parquet":
            strings = pd.read_parquet(path).astype(str).to_numpy().ravel().tolist()
        elif path.suffix == ".json":  # README.md is the workflow's own fixed text
            strings = [path.read_text()]
        else:
            continue
        assert not find_text_leaks(strings, texts, min_words=3), path
    summary = json.loads((share / "summary.json").read_text())
    assert summary["prompts"]["reports_read"] > 0


def _first_screen(html: str) -> str:
    """The report's landing page: the workflow description, stored as a JSON string."""
    marker = "var workflow_desc = "
    start = html.index(marker) + len(marker)
    return json.JSONDecoder().raw_decode(html, start)[0]


def test_report_opens_with_the_audit_summary(quick_run: QuickRun, report: str):
    run = quick_run.workdir
    summary = json.loads((run / "results/report/summary.json").read_text())
    stats = json.loads((run / "results/threshold/threshold.json").read_text())
    detection = json.loads((run / "results/evaluation/detection.json").read_text())
    assert summary["prompts"]["scored"] == stats["n_prompts"]
    assert summary["prompts"]["flagged"] == stats["n_memorized"]
    assert summary["enrichment"]["odds_ratio"] == stats["odds_ratio"]
    configured = summary["detection"]["windows"]["configured"]
    assert configured["auc"] == detection["windows"]["configured"]["auc"]
    assert summary["mitigation"]["strategies"], summary["mitigation"]
    first = _first_screen(report)
    assert "Audit summary" in first
    assert f"{stats['n_prompts']:,} unique prompts" in first
    assert f"{configured['auc']:.4f}" in first
    # the brief make demo prints is the first screen's opening, self-check included
    brief = (run / "results/report/brief.md").read_text()
    checks = summary["validity"]["checks"]
    assert {c["name"] for c in checks} >= {"detection_auc", "key_top1", "copy_recall"}
    assert next(c for c in checks if c["name"] == "detection_auc")["value"] == configured["auc"]
    verdict = "every bar holds" if summary["validity"]["all_hold"] else "FAILED"
    shown = html_lib.unescape(first)  # the page is included literally, HTML-escaped
    for line in brief.splitlines():
        if line.startswith("- "):
            assert line in shown, line
    assert verdict in brief and "results/report.html" in brief


def test_audit_summary_holds_no_report_text(quick_run: QuickRun):
    run = quick_run.workdir
    texts = pd.read_parquet(run / "results/prompts/prompts.parquet")["text"]
    for name in ("summary.md", "summary.json", "brief.md"):
        lines = (run / "results/report" / name).read_text().splitlines()
        assert not find_text_leaks(lines, texts, min_words=3), name
