"""Config validation: schema defaults, unknown keys, wrong types, missing paths."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from memaudit.config import ConfigError, check_paths, load_schema, validate_config
from tests.conftest import REPO, snakemake

SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")
DEMO = yaml.safe_load((REPO / "config.yaml").read_text())
PRESETS = sorted((REPO / "config").glob("*.yaml"))


def test_demo_config_is_valid_and_defaults_are_filled():
    filled = validate_config(DEMO, SCHEMA)
    assert filled["reports"]["markers"] == ["___"]
    # a block left out entirely comes back with every default
    partial = {k: v for k, v in DEMO.items() if k != "reports"}
    assert validate_config(partial, SCHEMA)["reports"]["sections"][0] == "impression"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_presets_are_valid_overlays(preset: Path):
    merged = copy.deepcopy(DEMO)
    for key, value in yaml.safe_load(preset.read_text()).items():
        if isinstance(value, dict):
            merged.setdefault(key, {}).update(value)
        else:
            merged[key] = value
    validate_config(merged, SCHEMA)


def test_every_schema_key_has_description_and_default():
    def walk(node, path):
        for name, sub in node.get("properties", {}).items():
            key = f"{path}.{name}".lstrip(".")
            assert "description" in sub, f"{key} lacks a description"
            assert "default" in sub or name in node.get("required", []), f"{key} lacks a default"
            if sub.get("type") == "object" or "properties" in sub:
                assert sub.get("additionalProperties") is False or "properties" not in sub, key
                walk(sub, key)

    assert SCHEMA["additionalProperties"] is False
    walk(SCHEMA, "")


def test_every_schema_key_is_commented_in_config_yaml():
    text = (REPO / "config.yaml").read_text()
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and ":" in stripped:
            value = stripped.split(":", 1)[1].strip()
            if value:  # a leaf key: it carries its own comment
                assert "#" in value, f"config.yaml line without a comment: {line!r}"


def test_typo_key_is_named():
    bad = copy.deepcopy(DEMO)
    bad["reports"]["sectoins"] = ["impression"]
    with pytest.raises(ConfigError, match=r"unknown key 'reports\.sectoins'"):
        validate_config(bad, SCHEMA)


def test_wrong_type_is_named():
    bad = copy.deepcopy(DEMO)
    bad["demo"]["n_studies"] = "many"
    with pytest.raises(ConfigError, match=r"key 'demo\.n_studies': 'many' is not of type"):
        validate_config(bad, SCHEMA)


def test_wrong_enum_is_named():
    bad = copy.deepcopy(DEMO)
    bad["model"]["kind"] = "stable-diffusion"
    with pytest.raises(ConfigError, match=r"key 'model\.kind'"):
        validate_config(bad, SCHEMA)


def test_missing_path_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"key 'reports\.path': path '.*nowhere' does not exist"):
        check_paths({"reports.path": str(tmp_path / "nowhere")})
    # a path that a rule produces is fine even before it exists
    check_paths({"reports.path": "results/x"}, produced=["results/x"])


def write_config(tmp_path: Path, mutate) -> Path:
    cfg = copy.deepcopy(DEMO)
    mutate(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["demo"].update(n_studeis=5), "unknown key 'demo.n_studeis'"),
        (lambda c: c["train"].update(steps="x"), "key 'train.steps'"),
        (
            lambda c: c.update(demo={**c["demo"], "enabled": False}),
            "key 'reports.path': path 'results/demo/corpus/files' does not exist",
        ),
        (
            lambda c: c["copy_detection"].update(embedding="timm"),
            "key 'copy_detection.network': the timm embedding needs both arch and weights",
        ),
        (
            lambda c: c["copy_detection"].update(train_images="results/demo/corpus/files"),
            "key 'copy_detection.heldout_images'",
        ),
    ],
    ids=["typo", "type", "missing-path", "network-without-weights", "copies-without-heldout"],
)
def test_snakemake_fails_before_any_job(workdir: Path, tmp_path: Path, mutate, expected: str):
    bad = write_config(tmp_path, mutate)
    proc = snakemake("-n", workdir=workdir, overlays=(bad,), check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert expected in output
    assert "Traceback" not in output
    assert "Job stats" not in output and not (workdir / "results").exists()
