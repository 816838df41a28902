"""Honest incremental re-runs: each config or code change re-runs what it affects, no more.

Every test copies the finished quick demo (``quick_run``), changes one thing and asks snakemake
for a dry run, then reads which rules it would run and why.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import QUICK, REPO, QuickRun, planned, snakemake

pytestmark = pytest.mark.slow

UPSTREAM = {"make_demo_corpus", "extract_prompts", "train_demo_model"}
SCORING = {"score_chunk", "gather_scores"}


def copy_run(quick_run: QuickRun, dest: Path) -> Path:
    """A copy of the finished run (timestamps kept), outside the shared session folder."""
    shutil.copytree(quick_run.workdir, dest, symlinks=True)
    return dest


def overlay(tmp_path: Path, changes: dict) -> Path:
    base = yaml.safe_load(QUICK.read_text())
    for block, values in changes.items():
        base.setdefault(block, {}).update(values)
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def dry_run(workdir: Path, *overlays: Path, snakefile: Path | None = None) -> dict:
    args = ["-n", "--cores", "2"]
    if snakefile is not None:
        args += ["--snakefile", str(snakefile)]
    return planned(snakemake(*args, workdir=workdir, overlays=overlays or (QUICK,)))


def test_unchanged_run_is_a_no_op(quick_run: QuickRun, tmp_path: Path):
    assert dry_run(copy_run(quick_run, tmp_path / "run")) == {}


def test_threshold_change_reruns_thresholding_and_downstream_only(
    quick_run: QuickRun, tmp_path: Path
):
    run = copy_run(quick_run, tmp_path / "run")
    jobs = dry_run(run, overlay(tmp_path, {"threshold": {"percentile": 97}}))
    assert "threshold_scores" in jobs
    assert any("Params have changed" in r for r in jobs["threshold_scores"]), jobs
    assert "plot_score_distribution" in jobs  # reads the new threshold
    assert not (UPSTREAM | SCORING) & set(jobs), sorted(jobs)


def test_scoring_steps_change_reruns_scoring_not_training(quick_run: QuickRun, tmp_path: Path):
    run = copy_run(quick_run, tmp_path / "run")
    jobs = dry_run(run, overlay(tmp_path, {"scoring": {"steps": 10}}))
    assert {"score_chunk", "gather_scores", "threshold_scores"} <= set(jobs)
    assert not UPSTREAM & set(jobs), sorted(jobs)


def test_model_change_reruns_scoring(quick_run: QuickRun, tmp_path: Path):
    run = copy_run(quick_run, tmp_path / "run")
    jobs = dry_run(run, overlay(tmp_path, {"model": {"dtype": "bfloat16"}}))
    assert "score_chunk" in jobs
    assert not {"make_demo_corpus", "extract_prompts", "train_demo_model"} & set(jobs)
    # retraining the demo model (a different model) re-runs training and scoring
    jobs = dry_run(run, overlay(tmp_path, {"train": {"seed": 1}}))
    assert {"train_demo_model", "score_chunk"} <= set(jobs)
    assert not {"make_demo_corpus", "extract_prompts"} & set(jobs)


def test_chunk_count_change_reruns_no_score(quick_run: QuickRun, tmp_path: Path):
    """--set-scatter changes only how the prompts are split; the gathered table is the same,
    but snakemake cannot know that without running the chunks: it plans new chunk jobs and
    nothing upstream of them."""
    run = copy_run(quick_run, tmp_path / "run")
    proc = snakemake(
        "-n", "--cores", "2", "--set-scatter", "score=2", workdir=run, overlays=(QUICK,)
    )
    jobs = planned(proc)
    assert "score_chunk" in jobs and not UPSTREAM & set(jobs)


def test_figure_style_change_redraws_the_figure_only(quick_run: QuickRun, tmp_path: Path):
    run = copy_run(quick_run, tmp_path / "run")
    jobs = dry_run(run, overlay(tmp_path, {"figures": {"log_scores": True}}))
    # the figure, and the share bundle that holds a copy of it
    assert set(jobs) == {"plot_score_distribution", "make_share_bundle"}, sorted(jobs)
    assert any("Params have changed" in r for r in jobs["plot_score_distribution"]), jobs
    jobs = dry_run(run, overlay(tmp_path, {"figures": {"attribution_top_n": 10}}))
    assert set(jobs) == {"plot_token_attribution"}, sorted(jobs)


def _copy_code(dest: Path) -> Path:
    """The repository's code (no venv, no results) in a new place."""
    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("workflow", "memaudit", "config", "profiles", "envs"):
        shutil.copytree(
            REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    return dest / "Snakefile"


def test_module_edit_reruns_the_stages_that_import_it(quick_run: QuickRun, tmp_path: Path):
    run = copy_run(quick_run, tmp_path / "run")
    code = tmp_path / "code"
    code.mkdir()
    snakefile = _copy_code(code)
    # the code in a new place (new paths, new mtimes) re-runs nothing by itself
    assert dry_run(run, snakefile=snakefile) == {}
    module = code / "memaudit" / "threshold" / "cutoff.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    jobs = dry_run(run, snakefile=snakefile)
    assert {"threshold_scores", "plot_score_distribution"} <= set(jobs)
    assert any("Params have changed" in r for r in jobs["threshold_scores"]), jobs
    # evaluation scores the ranking against the truth: it imports no threshold code
    assert not (UPSTREAM | SCORING | {"evaluate_detection"}) & set(jobs), sorted(jobs)
    # an edit of a module that scoring imports re-runs scoring, not training
    models = code / "memaudit" / "model" / "loading.py"
    models.write_text(models.read_text() + "\n# an edit\n")
    jobs = dry_run(run, snakefile=snakefile)
    assert "score_chunk" in jobs and "make_demo_corpus" not in jobs


def test_demo_model_figure_edit_redraws_its_figures_only(quick_run: QuickRun, tmp_path: Path):
    """Figures apart from computation: an edit of memaudit/model/figures.py re-runs the two
    plot rules of the demo model, not its training, not its memorization check, no scoring."""
    run = copy_run(quick_run, tmp_path / "run")
    code = tmp_path / "code"
    code.mkdir()
    snakefile = _copy_code(code)
    args = ("-n", "--cores", "2", "--snakefile", str(snakefile))
    args += ("--rerun-triggers", "code", "params", "input", "mtime")
    assert planned(snakemake(*args, workdir=run, overlays=(QUICK,))) == {}
    module = code / "memaudit" / "model" / "figures.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    jobs = planned(snakemake(*args, workdir=run, overlays=(QUICK,)))
    assert set(jobs) == {"plot_training_curve", "plot_demo_generations"}, sorted(jobs)
    assert all(any("Params have changed" in r for r in jobs[rule]) for rule in jobs), jobs


def test_attribution_figure_edit_redraws_its_figures_only(quick_run: QuickRun, tmp_path: Path):
    """Figures apart from computation: an edit of memaudit/attribution/figures.py re-runs the
    three attribution plot rules, no attribution chunk, no summary, nothing upstream."""
    run = copy_run(quick_run, tmp_path / "run")
    code = tmp_path / "code"
    code.mkdir()
    snakefile = _copy_code(code)
    args = ("-n", "--cores", "2", "--snakefile", str(snakefile))
    args += ("--rerun-triggers", "code", "params", "input", "mtime")
    module = code / "memaudit" / "attribution" / "figures.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    jobs = planned(snakemake(*args, workdir=run, overlays=(QUICK,)))
    assert set(jobs) == {
        "plot_token_attribution",
        "plot_attribution_methods",
        "plot_word_types",
    }, sorted(jobs)
    assert all(any("Params have changed" in r for r in jobs[rule]) for rule in jobs), jobs
    # and an edit of the engine re-runs the attribution chunks (the control)
    engine = code / "memaudit" / "attribution" / "engine.py"
    engine.write_text(engine.read_text() + "\n# an edit\n")
    jobs = planned(snakemake(*args, workdir=run, overlays=(QUICK,)))
    assert "attribute_tokens" in jobs and not (UPSTREAM | SCORING) & set(jobs), sorted(jobs)
