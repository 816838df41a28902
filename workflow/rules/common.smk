# Config validation and input functions only.
import sys
from pathlib import Path

REPO = Path(workflow.basedir)
sys.path.insert(0, str(REPO))

from snakemake.exceptions import WorkflowError

from memaudit.config import ConfigError, check_paths, load_schema, validate_config
from memaudit.provenance import script_code_version

try:
    config.update(
        validate_config(
            config, load_schema(REPO / "workflow/schemas/config.schema.yaml")
        )
    )
    copies = config["copy_detection"]
    check_paths(
        {
            "reports.path": config["reports"]["path"],
            "reports.metadata.path": (config["reports"]["metadata"] or {}).get("path"),
            "copy_detection.train_images": copies["train_images"],
            "copy_detection.train_list": copies["train_list"],
            "copy_detection.heldout_images": copies["heldout_images"],
            "copy_detection.network.weights": copies["network"]["weights"],
        },
        produced=["results/demo/corpus/files"] if config["demo"]["enabled"] else [],
    )
    if (
        copies["train_images"]
        and not copies["heldout_images"]
        and copies["threshold"] is None
    ):
        raise ConfigError(
            "invalid configuration:\n  config: key 'copy_detection.heldout_images': the copy "
            "threshold needs held-out real images when copy_detection.train_images is set "
            "(or set a fixed copy_detection.threshold)"
        )
    if copies["embedding"] != "pixels" and not (
        copies["network"]["arch"] and copies["network"]["weights"]
    ):
        raise ConfigError(
            "invalid configuration:\n  config: key 'copy_detection.network': the "
            f"{copies['embedding']} embedding needs both arch and weights (local .safetensors)"
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


def code_of(script):
    """params: code=code_of("<rule>"): the version of the package code the rule's script
    imports, so a package edit re-runs exactly the rules whose code changed."""
    return script_code_version(REPO / "workflow/scripts" / f"{script}.py")


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


def attribution_scoring():
    """The scoring settings of the attribution trajectory (its window is attribution's)."""
    return {k: v for k, v in config["scoring"].items() if k not in ("chunks", "window")}


def attribution_gpu_spec():
    """The attribution settings that change the chunk outputs (window, batching)."""
    return {k: config["attribution"][k] for k in ("window", "batch_size")}


MITIGATION_NOT_GENERATION = (
    "prompts",
    "sample_size",
    "include_planted",
    "chunks",
    "bootstrap",
)


def mitigation_generation_spec():
    """The mitigation settings that change images (selection, chunks and bootstrap do not:
    the selected prompts reach generation as an input file)."""
    block = config["mitigation"]
    return {k: v for k, v in block.items() if k not in MITIGATION_NOT_GENERATION}


def mitigation_selection_spec():
    """The mitigation settings that decide which prompts are mitigated."""
    return {
        k: config["mitigation"][k]
        for k in ("prompts", "sample_size", "include_planted", "seed")
    }


def copy_detection_enabled():
    """Copy detection runs on configured training images, else on the demo corpus."""
    return bool(config["copy_detection"]["train_images"]) or config["demo"]["enabled"]


def copy_embedding_spec():
    """The copy-detection settings that change embeddings (not the threshold choice)."""
    block = config["copy_detection"]
    return {k: v for k, v in block.items() if k not in ("percentile", "threshold")}


def get_demo_truth():
    """The demo's planted captions (demo runs only)."""
    return ["results/demo/corpus/truth.parquet"] if config["demo"]["enabled"] else []


def get_training_image_inputs(wildcards=None):
    """Inputs of embed_training_images: image folders, else the demo corpus arrays."""
    block = config["copy_detection"]
    if block["train_images"]:
        inputs = {"train_images": block["train_images"]}
        if block["heldout_images"]:
            inputs["heldout_images"] = block["heldout_images"]
        if block["train_list"]:
            inputs["train_list"] = block["train_list"]
        return inputs
    return {
        "studies": "results/demo/corpus/studies.parquet",
        "report_map": "results/prompts/report_map.parquet",
        "images": "results/demo/corpus/images.npy",
        "heldout": "results/demo/corpus/heldout.npy",
    }


def get_copy_reference(wildcards=None):
    """The copy-detection reference files, or nothing when copy detection is skipped."""
    if not copy_detection_enabled():
        return {}
    return {
        "embeddings": "results/copy_detection/train_embeddings.npy",
        "train_index": "results/copy_detection/train_images.parquet",
        "heldout": "results/copy_detection/heldout_neighbours.parquet",
        "reference": "results/copy_detection/reference.json",
    }


def get_training_pixels(wildcards=None):
    """What Fig. 4 needs to draw training images: the index, plus the demo image array."""
    if not copy_detection_enabled():
        return {}
    inputs = {"train_index": "results/copy_detection/train_images.parquet"}
    if not config["copy_detection"]["train_images"]:
        inputs["train_pixels"] = "results/demo/corpus/images.npy"
    return inputs


def get_share_inputs(wildcards=None):
    """Everything the shareable bundle reads; figures are those that draw no report text."""
    inputs = {
        "prompt_table": "results/prompts/prompts.parquet",
        "prompts": "results/prompts/summary.json",
        "report_map": "results/prompts/report_map.parquet",
        "ranked": "results/threshold/ranked_prompts.parquet",
        "threshold": "results/threshold/threshold.json",
        "attribution": "results/attribution/summary.json",
        "word_types": "results/attribution/word_types.parquet",
        "mitigation": "results/mitigation/summary.json",
        "figures": [
            "results/prompts/prompt_frequency.png",
            "results/figures/fig2_score_distribution.png",
            "results/figures/mitigation_diversity.png",
        ],
    }
    if config["demo"]["enabled"]:
        inputs["detection"] = "results/evaluation/detection.json"
        inputs["figures"].append("results/evaluation/per_step_auc.png")
    return inputs


def get_final_outputs():
    outputs = [
        "results/prompts/prompt_frequency.png",
        "results/threshold/memorized_prompts.parquet",
        "results/figures/fig2_score_distribution.png",
    ]
    if config["model"]["kind"] == "demo":
        outputs += [
            "results/model/generations.png",
            "results/model/memorization_check.json",
        ]
    if config["demo"]["enabled"]:
        outputs += ["results/evaluation/detection.json"]
    outputs += [
        "results/attribution/summary.json",
        "results/figures/fig3_token_attribution.png",
        "results/figures/attribution_word_types.png",
    ]
    outputs += [
        "results/mitigation/summary.json",
        "results/figures/fig4_mitigation_grid.png",
        "results/figures/mitigation_diversity.png",
    ]
    outputs += ["results/share/README.md"]
    return outputs
