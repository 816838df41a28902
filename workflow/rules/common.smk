# Config validation first (schema, then paths, then every Spec), then input functions.
import math
import sys
from pathlib import Path

REPO = Path(workflow.basedir)
sys.path.insert(0, str(REPO))

from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config

from memaudit.attribution.spec import AttributionSpec, KeyCheckSpec
from memaudit.config import (
    ConfigError,
    check_paths,
    coerce_cli_config,
    config_schema,
    validate_config,
)
from memaudit.copy_detection.spec import DETECTOR_WEIGHTS, EmbeddingSpec
from memaudit.corpus.spec import CorpusSpec
from memaudit.mitigation.spec import MitigationSpec
from memaudit.model.spec import TrainSpec
from memaudit.model.weights import check_model_config
from memaudit.provenance import script_code_version
from memaudit.scoring.catalog import check_model_support
from memaudit.scoring.spec import ScoringSpec
from memaudit.text import compile_markers

try:
    # Snakemake reads nested --config values as strings ('threshold={percentile: 95}' gives
    # '95'): give them the schema's types before validating.
    cli = coerce_cli_config(workflow.config_settings.config or {}, config_schema())
    update_config(config, cli)
    config.update(validate_config(config, config_schema()))
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
    for kind in [copies["embedding"], *copies["baselines"]]:
        if kind in ("torchvision", "timm") and not (
            copies["network"]["arch"] and copies["network"]["weights"]
        ):
            raise ConfigError(
                "invalid configuration:\n  config: key 'copy_detection.network': the "
                f"{kind} embedding needs both arch and weights (local .safetensors)"
            )
    if config["model"]["kind"] == "demo" and not config["demo"]["enabled"]:
        raise ConfigError(
            "invalid configuration:\n  config: key 'model.kind': the demo model is trained "
            "on the demo corpus, so it needs demo.enabled: true (or choose radedit/diffusers)"
        )
    model_problems = check_model_config(
        config["model"],
        produced=["results/model/demo"] if config["demo"]["enabled"] else [],
    )
    if model_problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(model_problems))
    threshold = config["threshold"]
    if threshold["method"] == "value" and not (
        threshold["value"] is not None and math.isfinite(threshold["value"])
    ):
        raise ConfigError(
            "invalid configuration:\n  config: key 'threshold.value': threshold.method is "
            f"value, so threshold.value must be a finite number (it is {threshold['value']})"
        )
    for i, marker in enumerate(config["reports"]["markers"]):
        try:
            compile_markers([marker])
        except ValueError as error:
            raise ConfigError(
                f"invalid configuration:\n  config: key 'reports.markers[{i}]': {error}"
            ) from None
except ConfigError as error:
    raise WorkflowError(str(error)) from None


wildcard_constraints:
    scatteritem=r"\d+-of-\d+",


def code_of(script):
    """params: code=code_of("<rule>"): the version of the package code the rule's script
    imports, so a package edit re-runs exactly the rules whose code changed."""
    return script_code_version(REPO / "workflow/scripts" / f"{script}.py")


# Which config keys reach which rule: each Spec class names the keys of its block that change
# none of its outputs, so a key that changes nothing re-runs nothing.


def demo_spec():
    """The demo corpus parameters without the on/off switch."""
    block = config["demo"]
    return {k: v for k, v in block.items() if k not in CorpusSpec.WORKFLOW_KEYS}


def get_reports_input():
    return config["reports"]["path"]


def get_metadata_input():
    metadata = config["reports"]["metadata"]
    return [metadata["path"]] if metadata else []


def scoring_spec():
    """The scoring settings that change scores (the chunk count changes none)."""
    block = config["scoring"]
    return {k: v for k, v in block.items() if k not in ScoringSpec.WORKFLOW_KEYS}


def wen_scoring_spec():
    """The scoring settings of stages that re-measure Wen's d_mem (key check, mitigation): the
    detector list is not theirs, so changing it re-runs only scoring and what reads it.
    """
    dropped = ScoringSpec.WORKFLOW_KEYS | ScoringSpec.DETECTOR_KEYS
    return {k: v for k, v in config["scoring"].items() if k not in dropped}


def get_model_input():
    """The demo model folder when the workflow trains it; other models are params only."""
    return [config["model"]["path"]] if config["model"]["kind"] == "demo" else []


def attribution_scoring():
    """The scoring settings of the attribution trajectory (its window is attribution's)."""
    dropped = (
        ScoringSpec.WORKFLOW_KEYS
        | ScoringSpec.DETECTOR_KEYS
        | AttributionSpec.REPLACED_SCORING_KEYS
    )
    return {k: v for k, v in config["scoring"].items() if k not in dropped}


def attribution_gpu_spec():
    """The attribution settings that change the chunk outputs (window, batching)."""
    return {k: config["attribution"][k] for k in AttributionSpec.ENGINE_KEYS}


def mitigation_generation_spec():
    """The mitigation settings that change images (selection, chunks and bootstrap do not:
    the selected prompts reach generation as an input file)."""
    block = config["mitigation"]
    return {
        k: v for k, v in block.items() if k not in MitigationSpec.NON_GENERATION_KEYS
    }


def mitigation_selection_spec():
    """The mitigation settings that decide which prompts are mitigated."""
    return {k: config["mitigation"][k] for k in MitigationSpec.SELECTION_PARAMS}


def copy_detection_enabled():
    """Copy detection runs on configured training images, else on the demo corpus."""
    return bool(config["copy_detection"]["train_images"]) or config["demo"]["enabled"]


def copy_embeddings():
    """The configured copy-detection embedding first, then its baselines."""
    block = config["copy_detection"]
    return list(dict.fromkeys([block["embedding"], *block["baselines"]]))


def copy_embedding_spec(kind=None):
    """The copy-detection settings that change one embedding (not the threshold choice):
    the config block with ``embedding`` set to ``kind`` (default: the configured one).
    """
    block = {
        k: v
        for k, v in config["copy_detection"].items()
        if k not in EmbeddingSpec.THRESHOLD_KEYS and k != "controls"
    }
    if kind is not None:
        block["embedding"] = kind
    if block["embedding"] != "learned":
        block.pop("learned")  # the detector's settings change no other embedding
    return block


def copy_detector_spec():
    """The learned copy detector's settings (train_copy_detector's params)."""
    return config["copy_detection"]["learned"]


def check_specs():
    """Build every Spec of the run from the rules' params, so that a setting the schema
    cannot check (a window beyond the steps, a corpus too small for its planted copies)
    fails here, before any job, not inside its job (a GPU job, for scoring)."""
    ScoringSpec.from_dict(scoring_spec())
    check_model_support(config["scoring"]["detectors"], config["model"])
    AttributionSpec.from_dict(config["attribution"]).scoring_spec(attribution_scoring())
    MitigationSpec.from_dict(mitigation_generation_spec())
    for kind in copy_embeddings():
        EmbeddingSpec.from_config(copy_embedding_spec(kind))
    if config["demo"]["enabled"]:
        CorpusSpec.from_dict(demo_spec())
    if config["model"]["kind"] == "demo":
        KeyCheckSpec.from_dict(config["key_check"])
        # train_demo_model trains at the corpus image size.
        train = {**config["train"], "image_size": config["demo"]["image_size"]}
        TrainSpec.from_dict(train)


try:
    check_specs()
except ValueError as error:
    raise WorkflowError(f"invalid configuration:\n  config: {error}") from None


def get_demo_truth():
    """The demo's planted captions (demo runs only)."""
    return ["results/demo/corpus/truth.parquet"] if config["demo"]["enabled"] else []


def get_key_check():
    """The planted keys' counterfactual check (demo model runs only: it needs the demo truth
    and the demo model's training images; model.kind demo implies demo.enabled)."""
    return (
        ["results/attribution/keys.parquet"]
        if config["model"]["kind"] == "demo"
        else []
    )


def get_demo_detection():
    """Detection against the demo's planted truth (demo runs only)."""
    return ["results/evaluation/detection.json"] if config["demo"]["enabled"] else []


def get_detector_comparison():
    """The detectors side by side against the demo's planted truth (demo runs only)."""
    return ["results/evaluation/detectors.json"] if config["demo"]["enabled"] else []


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


def get_embedding_inputs(wildcards):
    """Inputs of embed_training_images for one embedding: the images, and for the learned
    embedding the detector trained on them."""
    inputs = get_training_image_inputs()
    if wildcards.embedding == "learned":
        inputs["detector"] = DETECTOR_WEIGHTS
    return inputs


def copy_reference_files(kind):
    """The reference files embed_training_images writes for embedding ``kind``."""
    folder = f"results/copy_detection/{kind}"
    files = {
        "embeddings": f"{folder}/train_embeddings.npy",
        "train_index": f"{folder}/train_images.parquet",
        "heldout": f"{folder}/heldout_neighbours.parquet",
        "reference": f"{folder}/reference.json",
    }
    if kind == "learned":
        files["detector"] = DETECTOR_WEIGHTS
    return files


def get_copy_reference(wildcards=None):
    """The configured embedding's reference files, or nothing when copy detection is skipped."""
    if not copy_detection_enabled():
        return {}
    return copy_reference_files(config["copy_detection"]["embedding"])


def get_all_copy_references(wildcards=None):
    """Every embedding's reference files (the configured one and its baselines), keyed
    ``<embedding>_<file>``."""
    return {
        f"{kind}_{name}": path
        for kind in copy_embeddings()
        for name, path in copy_reference_files(kind).items()
    }


def get_validity_synthetic(wildcards=None):
    """The synthetic set, when it is made: copy detection's validity also judges its images."""
    if not synthetic_enabled():
        return {}
    return {
        "synthetic_images": "results/synthetic/images.npz",
        "synthetic_index": "results/synthetic/images.parquet",
    }


def copy_controls_spec():
    """The control prompts' count and the original strategy's generation settings."""
    block = config["mitigation"]
    keys = MitigationSpec.ORIGINAL_KEYS
    return {"n": config["copy_detection"]["controls"], **{k: block[k] for k in keys}}


def get_copy_controls(wildcards=None):
    """The ordinary control prompts' generations (when copy_detection.controls > 0)."""
    if not config["copy_detection"]["controls"]:
        return {}
    folder = "results/copy_detection/controls"
    return {
        "control_images": f"{folder}/images.npz",
        "control_prompts": f"{folder}/prompts.parquet",
    }


def get_copy_validity():
    """Copy detection's validity summary (when copy detection runs)."""
    return ["results/copy_detection/summary.json"] if copy_detection_enabled() else []


def get_synthetic_summary():
    """The synthetic set's copy summary (when the synthetic set is made)."""
    return ["results/synthetic/summary.json"] if synthetic_enabled() else []


def get_training_pixels(wildcards=None):
    """What Fig. 4 needs to draw training images: the index, plus the demo image array."""
    if not copy_detection_enabled():
        return {}
    kind = config["copy_detection"]["embedding"]
    inputs = {"train_index": f"results/copy_detection/{kind}/train_images.parquet"}
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
            "results/model/training_curve.png",
            "results/model/generations.png",
            "results/model/memorization_check.json",
        ]
    if config["demo"]["enabled"]:
        outputs += get_demo_detection() + [
            "results/evaluation/per_step_auc.png",
            "results/evaluation/detectors.png",
        ]
    outputs += [
        "results/attribution/summary.json",
        "results/figures/fig3_token_attribution.png",
        "results/figures/attribution_word_types.png",
    ]
    if get_key_check():
        outputs += ["results/figures/attribution_methods.png"]
    outputs += [
        "results/mitigation/summary.json",
        "results/figures/fig4_mitigation_grid.png",
        "results/figures/mitigation_diversity.png",
    ]
    outputs += get_synthetic_outputs()
    if copy_detection_enabled():
        outputs += [
            "results/copy_detection/summary.json",
            "results/figures/copy_detection_roc.png",
        ]
    outputs += ["results/share/README.md", "results/report/summary.md"]
    return outputs


def get_share_secret():
    """The audit secret that keys the share bundle's ids: share.secret_file, else the one
    make_share_secret creates once under results/share_secret/. Never inside results/share/.
    """
    given = config["share"]["secret_file"]
    path = given or "results/share_secret/audit.key"
    problem = None
    if Path(path).resolve().is_relative_to(Path("results/share").resolve()):
        problem = "lies inside results/share/, the folder meant for publication"
    elif given and not Path(given).is_file():
        problem = "does not exist (or is not a file)"
    if problem:
        raise WorkflowError(
            f"invalid configuration:\n  config: key 'share.secret_file': path '{path}' {problem}"
        )
    return path


def get_reports_fingerprint(wildcards):
    """params of extract_prompts: names, sizes and mtimes of the files of a report folder, so
    that adding or editing a report deep inside re-runs the stage. Empty for a file input
    (its own mtime is tracked) and for the demo corpus (tracked through make_demo_corpus).
    """
    from memaudit.prompts.sources import folder_fingerprint

    path = config["reports"]["path"]
    if config["demo"]["enabled"] and Path(path) == Path(
        rules.make_demo_corpus.output.files
    ):
        return ""
    return folder_fingerprint(path)


# --- synthetic set ---
from memaudit.synthetic.spec import SyntheticSpec


def synthetic_enabled():
    """The synthetic set is made when switched on and copy detection has images to judge by."""
    return bool(config["synthetic"]["enabled"]) and copy_detection_enabled()


def synthetic_generation_spec():
    """The synthetic-set settings that change images (switch, chunks and bootstrap do not)."""
    block = config["synthetic"]
    return {
        k: v for k, v in block.items() if k not in SyntheticSpec.NON_GENERATION_KEYS
    }


def get_synthetic_outputs():
    """The synthetic-set copy summary and figure, when the stage runs."""
    if not synthetic_enabled():
        return []
    return ["results/synthetic/summary.json", "results/figures/synthetic_copies.png"]


try:
    SyntheticSpec.from_dict(config["synthetic"])
except ValueError as error:
    raise WorkflowError(f"invalid configuration:\n  config: {error}") from None
