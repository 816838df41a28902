"""The shared config helpers: one from_dict for every Spec, defaults read from the schema, the
keys each Spec declares as changing none of its outputs, and command-line value coercion."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from memaudit.attribution.spec import AttributionSpec
from memaudit.config import (
    ConfigError,
    coerce_cli_config,
    config_schema,
    schema_defaults,
    spec_from_dict,
    validate_config,
)
from memaudit.copy_detection.spec import EmbeddingSpec
from memaudit.corpus.spec import CorpusSpec
from memaudit.mitigation.spec import STRATEGIES, MitigationSpec
from memaudit.model.spec import TrainSpec
from memaudit.scoring.spec import ScoringSpec

REPO = Path(__file__).resolve().parents[2]
# Every Spec, the config block it is built from, and how the workflow builds it.
SPECS = {
    "scoring": ScoringSpec.from_dict,
    "attribution": AttributionSpec.from_dict,
    "mitigation": MitigationSpec.from_dict,
    "demo": CorpusSpec.from_dict,
    "train": TrainSpec.from_dict,
    "copy_detection": EmbeddingSpec.from_config,
}
DEFAULTS = validate_config({}, config_schema())  # every block with its schema defaults


# --------------------------------------------------------------------------------------------
# One from_dict
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", SPECS)
def test_every_spec_names_an_unknown_key_with_its_block(block: str) -> None:
    with pytest.raises(ValueError, match=rf"{block}\.bogus_key"):
        SPECS[block]({"bogus_key": 1})


def test_an_unknown_nested_key_is_named_with_its_path() -> None:
    with pytest.raises(ValueError, match=r"copy_detection\.network\.weigths"):
        EmbeddingSpec.from_config({"network": {"weigths": "w.safetensors"}})


@pytest.mark.parametrize("block", SPECS)
def test_the_whole_default_block_builds_the_default_spec(block: str) -> None:
    """Workflow-only keys are accepted, YAML lists become tuples, and the schema's defaults are
    the Spec's defaults (image_size: TrainSpec takes the demo corpus's)."""
    values = DEFAULTS[block]
    expected = {"train": TrainSpec(image_size=DEFAULTS["demo"]["image_size"])}.get(block)
    built = SPECS[block](values)
    assert built == (expected or type(built)())
    for field in dataclasses.fields(built):
        assert not isinstance(getattr(built, field.name), list), field.name


@dataclass(frozen=True)
class _Toy:
    sizes: tuple[int, ...] = ()
    maybe: tuple[int, int] | None = None
    names: object = None


def test_spec_from_dict_turns_lists_into_tuples_only_for_tuple_fields() -> None:
    toy = spec_from_dict(
        _Toy, {"sizes": [1, 2], "maybe": [3, 4], "names": ["a"], "chunks": 9}, "toy", {"chunks"}
    )
    assert toy == _Toy(sizes=(1, 2), maybe=(3, 4), names=["a"])
    with pytest.raises(ValueError, match=r"unknown toy key\(s\) \['chunk'\] \(toy\.chunk\)"):
        spec_from_dict(_Toy, {"chunk": 9}, "toy", {"chunks"})


# --------------------------------------------------------------------------------------------
# Defaults from the schema
# --------------------------------------------------------------------------------------------


def test_schema_defaults_are_read_only_and_name_a_missing_key() -> None:
    scoring = schema_defaults("scoring")
    assert scoring["window"] == (0, None)  # lists as tuples: immutable dataclass defaults
    assert schema_defaults("copy_detection.network")["input_size"] == 224
    with pytest.raises(KeyError, match=r"no default for scoring\.stepz"):
        scoring["stepz"]
    with pytest.raises(KeyError, match="no config block 'scorin'"):
        schema_defaults("scorin")


CHANGED_DEFAULTS = {  # schema block, key, new default, how the Spec shows it
    ("scoring", "steps"): (37, "ScoringSpec().steps"),
    ("attribution", "window"): ([0, 2], "AttributionSpec().window"),
    ("mitigation", "rna_range"): ([2, 9], "MitigationSpec().rna_range"),
    ("demo", "n_studies"): (1999, "CorpusSpec().n_studies"),
    ("train", "unet_block_out_channels"): ([8, 16], "TrainSpec().unet_block_out_channels"),
    ("copy_detection", "side"): (17, "EmbeddingSpec().side"),
}


def test_a_default_changed_in_the_schema_changes_the_spec(tmp_path: Path) -> None:
    """A copy of the package beside an edited schema: its Specs carry the edited defaults."""
    shutil.copytree(
        REPO / "memaudit", tmp_path / "memaudit", ignore=shutil.ignore_patterns("__pycache__")
    )
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    for (block, key), (value, _) in CHANGED_DEFAULTS.items():
        schema["properties"][block]["properties"][key]["default"] = value
    (tmp_path / "workflow/schemas").mkdir(parents=True)
    (tmp_path / "workflow/schemas/config.schema.yaml").write_text(yaml.safe_dump(schema))
    shown = ", ".join(expr for _, expr in CHANGED_DEFAULTS.values())
    code = (
        "import json, memaudit\n"
        "from memaudit.scoring.spec import ScoringSpec\n"
        "from memaudit.attribution.spec import AttributionSpec\n"
        "from memaudit.mitigation.spec import MitigationSpec\n"
        "from memaudit.corpus.spec import CorpusSpec\n"
        "from memaudit.model.spec import TrainSpec\n"
        "from memaudit.copy_detection.spec import EmbeddingSpec\n"
        f"print(json.dumps([memaudit.__file__, {shown}]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    where, *values = json.loads(proc.stdout)
    assert Path(where).is_relative_to(tmp_path)  # the copy ran, not the repository's package
    assert values == [value for value, _ in CHANGED_DEFAULTS.values()]


# --------------------------------------------------------------------------------------------
# Which keys change which outputs
# --------------------------------------------------------------------------------------------


def _schema_keys(block: str) -> set[str]:
    return set(config_schema()["properties"][block]["properties"])


def _fields(cls: type) -> set[str]:
    return {field.name for field in dataclasses.fields(cls)}


def test_each_spec_accounts_for_every_key_of_its_block() -> None:
    """Every config key is either a Spec setting or declared as changing none of its outputs,
    never both, so a new key cannot slip past the workflow's params unnoticed."""
    scoring = _schema_keys("scoring")
    assert _fields(ScoringSpec) | ScoringSpec.WORKFLOW_KEYS == scoring
    assert not _fields(ScoringSpec) & ScoringSpec.WORKFLOW_KEYS

    attribution = _schema_keys("attribution")
    assert _fields(AttributionSpec) | AttributionSpec.WORKFLOW_KEYS == attribution
    assert set(AttributionSpec.ENGINE_KEYS) <= _fields(AttributionSpec)
    assert _fields(ScoringSpec) >= AttributionSpec.REPLACED_SCORING_KEYS

    mitigation = _schema_keys("mitigation")
    non_generation = MitigationSpec.NON_GENERATION_KEYS
    assert _fields(MitigationSpec) | non_generation == mitigation
    assert not _fields(MitigationSpec) & non_generation
    assert set(MitigationSpec.SELECTION_KEYS) <= non_generation
    assert set(MitigationSpec.SELECTION_PARAMS) <= mitigation

    corpus = _fields(CorpusSpec) - {"write_images"}  # a benchmark switch, no config key
    assert corpus | CorpusSpec.WORKFLOW_KEYS == _schema_keys("demo")

    assert _schema_keys("train") <= _fields(TrainSpec)

    embedding = {"embedding", "side", "network"}
    declared = EmbeddingSpec.THRESHOLD_KEYS | EmbeddingSpec.IMAGE_KEYS
    assert embedding | declared == _schema_keys("copy_detection")
    assert not embedding & declared


def test_the_strategy_names_are_the_schema_enum() -> None:
    strategies = config_schema()["properties"]["mitigation"]["properties"]["strategies"]
    assert tuple(strategies["items"]["enum"]) == STRATEGIES


# --------------------------------------------------------------------------------------------
# Command-line values
# --------------------------------------------------------------------------------------------


def test_command_line_strings_take_the_schema_types() -> None:
    """As Snakemake hands over --config 'block={...}': every nested value a string."""
    cli = {
        "threshold": {"percentile": "95", "value": "null", "method": "zscore"},
        "scoring": {"window": ["0", "null"], "batch_size": "8", "guidance": "2.5"},
        "mitigation": {"batch_size": "auto", "embopt_target_loss": "1e-3"},
        "figures": {"log_scores": "true"},
        "reports": {"path": "123", "text_column": "null", "metadata": "null"},
        "model": {"path": "null"},
    }
    assert coerce_cli_config(cli, config_schema()) == {
        "threshold": {"percentile": 95, "value": None, "method": "zscore"},
        "scoring": {"window": [0, None], "batch_size": 8, "guidance": 2.5},
        "mitigation": {"batch_size": "auto", "embopt_target_loss": 0.001},
        "figures": {"log_scores": True},
        # a string-only key keeps its text; null means null where the schema allows it
        "reports": {"path": "123", "text_column": None, "metadata": None},
        "model": {"path": None},
    }


def test_typed_values_and_unknown_keys_pass_through_for_validation_to_judge() -> None:
    cli = {"threshold": {"percentile": 95.5, "percentil": "95"}, "demo": 3}
    assert coerce_cli_config(cli, config_schema()) == cli


@pytest.mark.parametrize(
    ("cli", "key"),
    [
        ({"threshold": {"percentile": "high"}}, "threshold.percentile"),
        ({"scoring": {"window": ["0", "end"]}}, r"scoring.window\[1\]"),
        ({"figures": {"log_scores": "maybe"}}, "figures.log_scores"),
        ({"scoring": {"steps": "2.5"}}, "scoring.steps"),
    ],
)
def test_a_value_that_cannot_be_coerced_is_named(cli: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"--config: key '{key}': .* cannot be read as"):
        coerce_cli_config(cli, config_schema())
