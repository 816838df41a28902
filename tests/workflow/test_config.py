"""Config validation: schema defaults, unknown keys, wrong types, missing paths, settings
that fail before any job, command-line overrides, and the schema as the one source of truth."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config

from memaudit.config import ConfigError, check_paths, load_schema, validate_config
from tests.conftest import QUICK, REPO, snakemake

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
        # Checks of the Specs and of settings the schema cannot express, which used to fail
        # only inside a job (most of them a GPU job).
        (
            lambda c: c["scoring"].update(window=[0, 60]),
            "scoring.window [0, 60] must satisfy 0 <= start < stop <= scoring.steps "
            f"({DEMO['scoring']['steps']})",
        ),
        (
            lambda c: c["attribution"].update(window=[3, 1]),
            "attribution.window [3, 1] must satisfy 0 <= start < stop",
        ),
        (
            lambda c: c["attribution"].update(window=[0, 60]),
            "attribution.window [0, 60] reaches beyond the sampling steps (scoring.steps is "
            f"{DEMO['scoring']['steps']})",
        ),
        (
            lambda c: c["threshold"].update(method="value"),
            "key 'threshold.value': threshold.method is value, so threshold.value must be",
        ),
        (
            lambda c: c["reports"].update(markers=["___", "(unclosed"]),
            "key 'reports.markers[1]': marker regex '(unclosed' does not compile",
        ),
        (lambda c: c["demo"].update(n_planted=50), "exceeds n_studies = 2000 (demo.n_studies)"),
        (
            lambda c: (
                c["demo"].update(image_size=18),
                c["train"].update(unet_block_out_channels=[16, 32, 64]),
            ),
            "image_size 18 (demo.image_size) must be divisible by 2**2",
        ),
    ],
    ids=[
        "typo",
        "type",
        "missing-path",
        "network-without-weights",
        "copies-without-heldout",
        "scoring-window-beyond-steps",
        "attribution-window-reversed",
        "attribution-window-beyond-steps",
        "threshold-value-without-value",
        "marker-regex",
        "corpus-too-small",
        "image-size-vs-unet-levels",
    ],
)
def test_snakemake_fails_before_any_job(workdir: Path, tmp_path: Path, mutate, expected: str):
    bad = write_config(tmp_path, mutate)
    proc = snakemake("-n", workdir=workdir, overlays=(bad,), check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert expected in output
    assert "Traceback" not in output
    assert "Job stats" not in output and not (workdir / "results").exists()


# --------------------------------------------------------------------------------------------
# Command-line overrides
# --------------------------------------------------------------------------------------------


def test_a_nested_command_line_value_takes_the_schema_type(workdir: Path):
    """Snakemake reads 'threshold={percentile: 95}' as the string '95'; it must pass."""
    snakemake("-n", "--config", "threshold={percentile: 95}", workdir=workdir)


def test_a_command_line_value_that_cannot_be_coerced_is_named(workdir: Path):
    proc = snakemake("-n", "--config", "threshold={percentile: high}", workdir=workdir, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "--config: key 'threshold.percentile': 'high' cannot be read as number" in output
    assert "Traceback" not in output


# The workflow as Snakemake parses it: its config and every rule's params (repr, as Snakemake
# stores them to decide re-runs), through the API (the command line prints no params).
_PARSE = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.cli import parse_config
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

repo, workdir, out, cli, *configfiles = sys.argv[1:]
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(cores=1),
        config_settings=ConfigSettings(
            configfiles=[Path(p) for p in configfiles], config=parse_config(json.loads(cli))
        ),
        snakefile=Path(repo) / "Snakefile",
        workdir=Path(workdir),
    )._workflow
    params = {
        rule.name: {
            name: repr(rule.params[i]) for name, (i, _) in rule.params._names.items()
            if name != "code"
        }
        for rule in workflow.rules
    }
    Path(out).write_text(json.dumps({"config": workflow.config, "params": params}))
"""


def parsed_workflow(workdir: Path, overlays=(), cli=()) -> dict:
    out = workdir / "parsed.json"
    configfiles = [REPO / "config.yaml", *overlays]
    args = [str(REPO), str(workdir), str(out), json.dumps(list(cli)), *map(str, configfiles)]
    proc = subprocess.run(
        [sys.executable, "-c", _PARSE, *args], cwd=workdir, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def test_command_line_values_reach_the_rules_typed(workdir: Path):
    parsed = parsed_workflow(
        workdir, cli=["threshold={percentile: 95}", "scoring={window: [0, 1], steps: 10}"]
    )
    assert parsed["config"]["threshold"]["percentile"] == 95
    assert parsed["config"]["threshold"]["method"] == "percentile"  # merged, not replaced
    scoring = parsed["params"]["score_chunk"]["scoring"]
    assert "'steps': 10" in scoring and "'window': [0, 1]" in scoring


# --------------------------------------------------------------------------------------------
# One source of truth
# --------------------------------------------------------------------------------------------


def _old_selections(cfg: dict) -> dict[tuple[str, str], dict]:
    """The key lists common.smk spelled out before the Specs declared them: the params each
    rule got then, which it must still get (same keys, same order, so the same params hash)."""
    scoring, mitigation = cfg["scoring"], cfg["mitigation"]
    not_generation = ("prompts", "sample_size", "include_planted", "chunks", "bootstrap")
    scores = {k: v for k, v in scoring.items() if k != "chunks"}
    # the detector list (added later) reaches only the scoring jobs: the stages that
    # re-measure Wen's d_mem keep the params they had
    wen = {k: v for k, v in scores.items() if k not in ("detectors", "primary")}
    return {
        ("make_demo_corpus", "spec"): {k: v for k, v in cfg["demo"].items() if k != "enabled"},
        ("score_chunk", "scoring"): scores,
        ("attribute_tokens", "scoring"): {k: v for k, v in wen.items() if k != "window"},
        # (methods, ig_steps and neutral_token joined window and batch_size with the methods
        # side by side: they change a chunk's outputs)
        ("attribute_tokens", "attribution"): {
            k: cfg["attribution"][k]
            for k in ("window", "batch_size", "methods", "ig_steps", "neutral_token")
        },
        ("generate_mitigations", "mitigation"): {
            k: v for k, v in mitigation.items() if k not in not_generation
        },
        ("generate_mitigations", "scoring"): wen,
        ("select_mitigation_prompts", "selection"): {
            k: mitigation[k] for k in ("prompts", "sample_size", "include_planted", "seed")
        },
    }


@pytest.mark.parametrize("overlays", [(), (QUICK,)], ids=["default", "quick"])
def test_rules_get_the_same_params_from_the_specs_key_lists(workdir: Path, overlays):
    parsed = parsed_workflow(workdir, overlays)
    for (rule, name), expected in _old_selections(parsed["config"]).items():
        assert parsed["params"][rule][name] == repr(expected), (rule, name)
    common = (REPO / "workflow/rules/common.smk").read_text()
    assert "MITIGATION_NOT_GENERATION" not in common  # the Specs' lists, not a copy of them


# Values config.yaml sets on purpose apart from the schema default: the demo's CPU budget
# (`make demo` in about 10 minutes on 2 cores; README). The real-run presets pin the paper's
# settings back (test_presets_pin_the_papers_settings).
DEMO_OVERRIDES = {
    # a 16x16 organism: a UNet row costs a fifth of the 32x32 one's FLOPs
    "demo.image_size": 16,
    "train.unet_block_out_channels": [16, 32],
    # trained longer than the 32x32 organism: at 1,500 steps two of three training seeds
    # missed a validity bar (key top-1, copy recall; README)
    "train.steps": 2500,
    "scoring.steps": 20,  # 20 DDIM steps instead of the paper's 50
    "scoring.chunks": 1,  # one scoring job on a CPU (a GPU cluster scatters more)
    "attribution.ig_steps": 8,
    "attribution.chunks": 1,
    "key_check.generations": 2,
    "key_check.steps": 20,
    "mitigation.sample_size": 6,  # a seeded sample of 6 prompts instead of every selected one
    "mitigation.n_seeds": 16,  # 16 generations per prompt and strategy instead of 50
    "mitigation.steps": 20,
    # The pixel-space demo model's generations are noisy above guidance ~3 (docs/method.md).
    "mitigation.guidance": 3,
    "mitigation.embopt_generations": 2,
    "mitigation.chunks": 1,
    "synthetic.n_images": 200,
    "synthetic.steps": 20,
    "synthetic.guidance": 3,
    # p99: a p95 threshold flags 5 % of novel images by construction (the false-copy bar)
    "copy_detection.percentile": 99,
    # A copy detector sized for the 16-pixel phantoms and the CPU.
    "copy_detection.side": 16,
    "copy_detection.learned.input_size": 16,
    "copy_detection.learned.channels": [16, 32],
    "copy_detection.learned.steps": 400,
    "copy_detection.learned.batch_size": 128,
}


def _leaves(node: dict, prefix: str = ""):
    for name, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


def test_config_yaml_repeats_the_schema_defaults_except_the_demo_overrides():
    """config.yaml stays the commented demo audit, but cannot drift from the schema."""
    defaults = dict(_leaves(validate_config({}, SCHEMA)))
    differ = {key: value for key, value in _leaves(DEMO) if defaults.get(key, "<none>") != value}
    assert differ == DEMO_OVERRIDES


@pytest.mark.parametrize("preset", ["radedit_mimic.yaml", "iu_xray_csv.yaml"])
def test_presets_pin_the_papers_settings(preset: str):
    """A real run overlays a preset on config.yaml: every sampling setting the CPU demo lowers
    is set back to the paper's (Dutt 2025: 50 DDIM steps, 4 scoring generations, 50 mitigation
    seeds, guidance 7.5; a held-out p95 copy threshold)."""
    merged = copy.deepcopy(DEMO)
    update_config(merged, yaml.safe_load((REPO / "config" / preset).read_text()))
    assert merged["scoring"]["steps"] == 50 and merged["scoring"]["generations"] == 4
    assert merged["scoring"]["guidance"] == 7.5
    assert merged["mitigation"]["n_seeds"] == 50 and merged["mitigation"]["steps"] == 50
    assert merged["mitigation"]["guidance"] == 7.5 and merged["synthetic"]["steps"] == 50
    assert merged["copy_detection"]["percentile"] == 95
    assert merged["attribution"]["ig_steps"] == 16
