# Config validation and input functions only.
import sys
from pathlib import Path

REPO = Path(workflow.basedir)
sys.path.insert(0, str(REPO))

from snakemake.exceptions import WorkflowError

from memaudit.config import ConfigError, check_paths, load_schema, validate_config

try:
    config.update(
        validate_config(
            config, load_schema(REPO / "workflow/schemas/config.schema.yaml")
        )
    )
    check_paths(
        {
            "reports.path": config["reports"]["path"],
            "reports.metadata.path": (config["reports"]["metadata"] or {}).get("path"),
        },
        produced=["results/demo/corpus/files"] if config["demo"]["enabled"] else [],
    )
    if config["model"]["kind"] == "demo" and not config["demo"]["enabled"]:
        raise ConfigError(
            "invalid configuration:\n  config: key 'model.kind': the demo model is trained "
            "on the demo corpus, so it needs demo.enabled: true (or choose radedit/diffusers)"
        )
except ConfigError as error:
    raise WorkflowError(str(error)) from None


wildcard_constraints:
    scatteritem=r"\d+-of-\d+",


def module_file(name):
    """The package module a rule's script calls: an input, so editing it re-runs the rule."""
    return str(REPO / "memaudit" / f"{name}.py")


def demo_spec():
    """The demo corpus parameters without the on/off switch."""
    return {k: v for k, v in config["demo"].items() if k != "enabled"}


def get_reports_input():
    return config["reports"]["path"]


def get_metadata_input():
    metadata = config["reports"]["metadata"]
    return [metadata["path"]] if metadata else []


def scoring_spec():
    """The scoring settings that change scores (the chunk count changes none)."""
    return {k: v for k, v in config["scoring"].items() if k != "chunks"}


def get_model_input():
    """The demo model folder when the workflow trains it; other models are params only."""
    return [config["model"]["path"]] if config["model"]["kind"] == "demo" else []


def get_final_outputs():
    outputs = [
        "results/prompts/prompt_frequency.png",
        "results/threshold/memorized_prompts.parquet",
        "results/figures/fig2_score_distribution.png",
    ]
    if config["model"]["kind"] == "demo":
        outputs += ["results/model/generations.png"]
    if config["demo"]["enabled"]:
        outputs += ["results/evaluation/detection.json"]
    return outputs
