"""The workflow's audit secret: made once, private, kept on re-runs, or supplied by the user."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.conftest import snakemake

KEY = "results/share_secret/audit.key"


def test_secret_rule_makes_a_private_key_and_keeps_it_on_forced_reruns(workdir: Path) -> None:
    snakemake("--cores", "1", KEY, workdir=workdir)
    key = workdir / KEY
    first = key.read_bytes()
    assert len(first) == 32
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    snakemake("--cores", "1", "--forceall", KEY, workdir=workdir)
    assert key.read_bytes() == first
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_a_supplied_secret_replaces_the_rule_and_a_missing_one_is_named(
    workdir: Path, tmp_path: Path
) -> None:
    supplied = tmp_path / "lab.key"
    supplied.write_bytes(bytes(32))
    supplied.chmod(0o600)
    overlay = tmp_path / "secret.yaml"
    overlay.write_text(f"share:\n  secret_file: {supplied}\n")
    plan = snakemake("-n", "results/share/README.md", workdir=workdir, overlays=(overlay,))
    assert "make_share_bundle" in plan.stdout
    assert "make_share_secret" not in plan.stdout
    overlay.write_text(f"share:\n  secret_file: {tmp_path / 'none.key'}\n")
    failed = snakemake("-n", workdir=workdir, overlays=(overlay,), check=False)
    assert failed.returncode != 0
    assert "key 'share.secret_file'" in failed.stdout + failed.stderr
    assert "none.key' does not exist" in failed.stdout + failed.stderr
