"""Where a model's parts are on disk, and the config-time check that they are there.

A part (UNet, VAE, text encoder, tokenizer, pipeline folder) is a local folder or a hub id
(``owner/name``). A hub id is looked up in the local Hugging Face cache only, as
``local_files_only=True`` does, unless ``model.allow_download: true``: the workflow never
downloads weights behind the user's back (a missing local folder such as ``weights/radedit``
reads as a hub id). Only safetensors weights count; pickles are never read.

Only the standard library here (``huggingface_hub`` is imported when a hub id is looked up):
:func:`check_model_config` runs in the Snakemake process before any job, where importing the
model stack would slow every dry run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# The revision a hub id resolves to, in the cache or on the hub (the config has no key for it).
HUB_REVISION = "main"
# Files fetched from the hub: configs, tokenizers and safetensors weights, never pickles.
HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "*.safetensors.index.json"]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
UNET_WEIGHTS = "diffusion_pytorch_model"  # stem of a diffusers model's weights file
TEXT_WEIGHTS = "model"  # stem of a transformers model's weights file
RADEDIT_DEFAULTS = {
    "unet": "microsoft/radedit",
    "unet_subfolder": "unet",
    "vae": "stabilityai/sdxl-vae",
    "text_encoder": "microsoft/BiomedVLP-BioViL-T",
    "max_length": 128,
}


class ModelLoadError(ValueError):
    """A model part could not be found or read; the message says which part and what to do."""


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value (read at call time)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def looks_like_hub_id(ref: str) -> bool:
    """``owner/name``: one slash, not a path that starts at ``.``, ``/`` or ``~``."""
    return ref.count("/") == 1 and not ref.startswith((".", "/", "~"))


def download_hint(ref: str | None = None) -> str:
    """What to run so that ``ref`` resolves without the workflow downloading anything."""
    state = (
        "HF_HUB_OFFLINE is set, so not even then" if hub_offline() else "HF_HUB_OFFLINE is not set"
    )
    repo = ref if ref and looks_like_hub_id(ref) else "<owner/name>"
    command = f"download {repo} --revision {HUB_REVISION}"
    return (
        f"Nothing is downloaded unless model.allow_download is true ({state}): fill the "
        f"Hugging Face cache beforehand with `hf {command}` "
        f"(older huggingface_hub: `huggingface-cli {command}`), or add `--local-dir <folder>` "
        "and set the key to <folder>. microsoft/radedit: accept its licence on the hub first."
    )


def resolve_part(
    ref: str, part: str, key: str, subfolder: str = "", allow_download: bool = False
) -> Path:
    """The local folder of a part: ``ref`` itself, or its hub id's snapshot in the cache.

    With ``allow_download`` (and ``HF_HUB_OFFLINE`` not set) a hub id missing from the cache
    is downloaded (configs, tokenizers and safetensors only). ModelLoadError names ``key``.
    """
    ref = str(ref)
    local = Path(ref).expanduser()
    if local.is_dir():
        folder = local / subfolder if subfolder else local
        if not folder.is_dir():
            raise ModelLoadError(
                f"the {part} subfolder {subfolder!r} does not exist in {local} ({key})"
            )
        return folder
    where = f"{key}" + (f", subfolder {subfolder!r}" if subfolder else "")
    if not looks_like_hub_id(ref):
        raise ModelLoadError(
            f"the {part} folder {ref!r} ({key}) does not exist ({local.resolve()}) and is not "
            f"a hub id (owner/name): set {key} to the folder that holds the {part}"
        )
    root = cached_snapshot(ref, subfolder)
    if root is None and allow_download and not hub_offline():
        root = _download(ref, subfolder, part, where)
    if root is None:
        raise ModelLoadError(
            f"the {part} {ref!r} ({where}) is neither a local folder ({local.resolve()} does "
            f"not exist) nor (completely) in the Hugging Face cache at revision {HUB_REVISION!r}. "
            + download_hint(ref)
        )
    folder = root / subfolder if subfolder else root
    if not folder.is_dir():
        raise ModelLoadError(f"the hub repository {ref!r} has no subfolder {subfolder!r} ({key})")
    return folder


def cached_snapshot(ref: str, subfolder: str = "") -> Path | None:
    """The cached snapshot folder of hub id ``ref`` at :data:`HUB_REVISION`, or None when it
    is not cached (or only partly: files the download would fetch are missing).

    Reads the cache only (``local_files_only=True``): never touches the network.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            ref,
            revision=HUB_REVISION,
            allow_patterns=_hub_patterns(subfolder),
            local_files_only=True,
        )
    except LocalEntryNotFoundError:
        return None
    return Path(folder)


def _hub_patterns(subfolder: str) -> list[str]:
    """What a download fetches: the subfolder's files and the top-level configs, or all."""
    if not subfolder:
        return HUB_PATTERNS
    return [*(f"{subfolder}/{p}" for p in HUB_PATTERNS), "*.json"]


def _download(ref: str, subfolder: str, part: str, where: str) -> Path:
    """The one place that may use the network (``model.allow_download: true`` only)."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            ref, revision=HUB_REVISION, allow_patterns=_hub_patterns(subfolder)
        )
    except Exception as err:  # noqa: BLE001 - any hub failure becomes one clear error
        raise ModelLoadError(
            f"could not download the {part} {ref!r} ({where}): {type(err).__name__}: {err}. "
            + download_hint(ref)
        ) from err
    return Path(folder)


def find_weights(folder: Path, part: str, stem: str) -> list[Path]:
    """The safetensors file(s) ``<stem>.safetensors`` (or the shards its index lists).

    A folder with only pickled weights (``.bin``, ``.pt``, ...) or none at all is a
    ModelLoadError that says so; the files' contents are not read here.
    """
    single = folder / f"{stem}.safetensors"
    index = folder / f"{stem}.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        weight_map = read_json(index).get("weight_map") or {}
        files = [folder / name for name in sorted(set(weight_map.values()))]
        absent = [f.name for f in files if not f.is_file()]
        if not files or absent:
            raise ModelLoadError(
                f"the {part} shard index {index} lists missing shard(s): {absent or 'none'}"
            )
        return files
    pickles = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelLoadError(
            f"the {part} folder {folder} holds only {', '.join(pickles)}: only safetensors "
            "weights are loaded (pickled .bin/.pt files are never unpickled). Convert them "
            f"to safetensors, or download a repository revision that has {stem}.safetensors"
        )
    raise ModelLoadError(
        f"no {part} weights in {folder}: expected {single.name} (or a sharded "
        f"{index.name}). {download_hint()}"
    )


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"cannot read the JSON file {path}: {err}") from err


# --------------------------------------------------------------------------------------------
# Config-time check
# --------------------------------------------------------------------------------------------


# A config key to check: (key, ref, subfolder the ref is resolved with, what it is, [(folder
# inside it, part name, weights stem or None for a part without weights)]).
Part = tuple[str, str, str, str, list[tuple[str, str, str | None]]]


def model_parts(block: Mapping[str, Any]) -> list[Part]:
    """The parts :func:`memaudit.model.loading.load_model` reads for the block's kind, with
    the same defaults (radedit's tokenizer defaults to its text encoder)."""
    kind = block.get("kind")
    if kind == "radedit":
        get = {**RADEDIT_DEFAULTS, **{k: v for k, v in block.items() if v is not None}}
        tokenizer = get.get("tokenizer") or get["text_encoder"]
        return [
            (key, ref, subfolder, part, [("", part, stem)])
            for key, ref, subfolder, part, stem in (
                ("model.unet", get["unet"], get["unet_subfolder"] or "", "unet", UNET_WEIGHTS),
                ("model.vae", get["vae"], "", "VAE", UNET_WEIGHTS),
                ("model.text_encoder", get["text_encoder"], "", "text encoder", TEXT_WEIGHTS),
                ("model.tokenizer", tokenizer, "", "tokenizer", None),
            )
        ]
    inside = [("unet", "unet", UNET_WEIGHTS), ("text_encoder", "text encoder", TEXT_WEIGHTS)]
    if kind == "diffusers":
        inside.append(("vae", "VAE", UNET_WEIGHTS))
    if kind in ("demo", "diffusers") and block.get("path"):
        return [("model.path", str(block["path"]), "", f"{kind} model folder", inside)]
    return []


def check_model_config(block: Mapping[str, Any], produced: Iterable[str] = ()) -> list[str]:
    """Problems with the model parts of a validated ``model:`` block, each naming its key.

    Every part must be a local folder or a hub id in the Hugging Face cache (or, with
    ``allow_download``, a hub id that the job will download) and hold safetensors weights; a
    diffusers folder needs its ``model_index.json``. ``produced`` lists folders a workflow
    rule writes (the demo model), which are not checked. Each problem reads ``config: key
    'model.unet': ...``, as the other config errors do.
    """
    produced = {str(Path(p)) for p in produced}
    allow = bool(block.get("allow_download"))
    problems: list[str] = []
    for key, ref, subfolder, what, inside in model_parts(block):
        ref = str(ref)
        if str(Path(ref)) in produced:
            continue
        pending = not Path(ref).expanduser().exists() and looks_like_hub_id(ref)
        if allow and pending and cached_snapshot(ref, subfolder) is None:
            continue  # the job that loads it downloads it
        try:
            root = resolve_part(ref, what, key, subfolder)
            if block.get("kind") == "diffusers" and not (root / "model_index.json").is_file():
                raise ModelLoadError(f"the diffusers folder {root} has no model_index.json")
            for name, part, stem in inside:
                folder = root / name if name else root
                if not folder.is_dir():
                    raise ModelLoadError(f"the model folder {root} lacks the subfolder {name}/")
                if stem is not None:
                    find_weights(folder, part, stem)
        except ModelLoadError as err:
            problems.append(f"config: key '{key}': {err}")
    return problems
