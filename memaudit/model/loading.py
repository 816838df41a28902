"""One uniform model object for every stage, and the loaders that build it.

Three kinds (config ``model.kind``): ``radedit`` (RadEdit's recipe), ``diffusers`` (any
Stable-Diffusion-style pipeline folder or hub id) and ``demo`` (the folder written by the
``train_demo_model`` rule). Every later stage sees only :class:`AuditModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from diffusers import AutoencoderKL, DDIMScheduler, ModelMixin, UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import load_file as load_safetensors
from transformers import BertConfig, BertModel, BertTokenizer, PreTrainedTokenizerFast

from memaudit.model.weights import (
    RADEDIT_DEFAULTS,
    TEXT_WEIGHTS,
    UNET_WEIGHTS,
    ModelLoadError,
    find_weights,
    read_json,
    resolve_part,
)


@dataclass
class AuditModel:
    """Everything a stage needs to encode prompts, run the denoiser and decode images.

    ``latent_shape`` is (channels, height, width) of what the UNet denoises; ``image_size``
    is the side of the decoded image in pixels (equal to the latent side without a VAE).
    """

    kind: str
    tokenizer: Any
    text_encoder: torch.nn.Module
    unet: torch.nn.Module
    scheduler: Any
    vae: torch.nn.Module | None
    vae_scaling_factor: float
    image_size: int
    latent_shape: tuple[int, int, int]
    max_length: int
    dtype: torch.dtype
    device: torch.device

    def tokenize(self, prompts: list[str], **kwargs: Any) -> Any:
        """Tokenize to exactly ``max_length`` positions (padded and truncated), as tensors."""
        return self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
            **kwargs,
        )

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Conditioning embeddings [B, max_length, hidden] in the model dtype.

        No attention mask is passed (padding is attended), as diffusers does for RadEdit's
        text encoder and the demo encoder is trained that way too.
        """
        return self.encode_ids(self.tokenize(prompts)["input_ids"])

    def encode_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Embeddings of already tokenized ids (no ``no_grad``: callers decide)."""
        out = self.text_encoder(input_ids.to(self.device))
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return hidden.to(self.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Grayscale images [B, H, W], float32 in [0, 1], at the model's output size.

        With a VAE, latents are unscaled and decoded in float32 (the SDXL VAE gives black
        images in float16); without one, latents are pixels in [-1, 1].
        """
        if self.vae is not None:
            latents = latents.to(device=self.device, dtype=torch.float32)
            pixels = self.vae.decode(latents / self.vae_scaling_factor).sample
        else:
            pixels = latents.to(torch.float32)
        images = (pixels / 2 + 0.5).clamp(0, 1)
        return images.mean(dim=1)


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------

KINDS = ("demo", "radedit", "diffusers")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEMO_SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


def load_model(cfg: dict, device: str | None = None, dtype: str | None = None) -> AuditModel:
    """Build the :class:`AuditModel` described by the config block ``model:``.

    ``device`` defaults to CUDA when available, else CPU; ``dtype`` (float32, bfloat16,
    float16; default ``cfg["dtype"]`` or float32) applies to the UNet and text encoder, the
    VAE always stays float32. Every part may be a local folder or a hub id, found in the
    Hugging Face cache and downloaded only with ``cfg["allow_download"]`` (see
    :mod:`memaudit.model.weights`). Only safetensors weights are read; remote code never runs.
    """
    cfg = dict(cfg or {})
    kind = cfg.get("kind")
    if kind not in KINDS:
        raise ModelLoadError(f"model.kind is {kind!r}; it must be one of {', '.join(KINDS)}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype_name = dtype or cfg.get("dtype") or "float32"
    if dtype_name not in DTYPES:
        raise ModelLoadError(
            f"model.dtype is {dtype_name!r}; it must be one of {', '.join(DTYPES)}"
        )
    if dtype_name == "float16" and dev.type == "cpu":
        raise ModelLoadError(
            "model.dtype float16 is not supported on CPU (many CPU kernels lack float16); "
            "use float32 or bfloat16 on CPU, or run on a GPU"
        )
    torch_dtype = DTYPES[dtype_name]
    if kind == "radedit":
        return _load_radedit(cfg, dev, torch_dtype)
    if kind == "diffusers":
        return _load_diffusers(cfg, dev, torch_dtype)
    return _load_demo(cfg, dev, torch_dtype)


def radedit_scheduler() -> DDIMScheduler:
    """RadEdit's sampler: DDIM, 1000 steps, linear betas 1e-4 -> 0.02, trailing spacing."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        clip_sample=False,
        prediction_type="epsilon",
        timestep_spacing="trailing",
        steps_offset=1,
    )


def _load_radedit(cfg: dict, device: torch.device, dtype: torch.dtype) -> AuditModel:
    get = {**RADEDIT_DEFAULTS, **{k: v for k, v in cfg.items() if v is not None}}
    get.setdefault("tokenizer", get["text_encoder"])
    sub = get["unet_subfolder"] or ""
    allow = _allow(get)
    unet_dir = resolve_part(get["unet"], "unet", "model.unet", sub, allow)
    unet = _load_diffusers_model(UNet2DConditionModel, unet_dir, "unet", dtype)
    vae_dir = resolve_part(get["vae"], "VAE", "model.vae", allow_download=allow)
    vae = _load_diffusers_model(AutoencoderKL, vae_dir, "VAE")
    text_dir = resolve_part(
        get["text_encoder"], "text encoder", "model.text_encoder", allow_download=allow
    )
    text_encoder = load_bert_encoder(text_dir, "text encoder")
    tok_dir = resolve_part(get["tokenizer"], "tokenizer", "model.tokenizer", allow_download=allow)
    max_length = int(get["max_length"])
    tokenizer = _load_bert_tokenizer(tok_dir, max_length)
    return _assemble(
        "radedit",
        tokenizer,
        text_encoder,
        unet,
        radedit_scheduler(),
        vae,
        max_length,
        device,
        dtype,
    )


def _load_diffusers(cfg: dict, device: torch.device, dtype: torch.dtype) -> AuditModel:
    ref = _require(cfg, "path", "diffusers")
    root = resolve_part(ref, "pipeline folder", "model.path", allow_download=_allow(cfg))
    index_file = root / "model_index.json"
    if not index_file.is_file():
        raise ModelLoadError(
            f"model.path {ref!r} ({root}) has no model_index.json; kind 'diffusers' expects a "
            "Stable-Diffusion-style folder with tokenizer/, text_encoder/, unet/, scheduler/ "
            "and vae/ subfolders"
        )
    index = read_json(index_file)
    for part in ("tokenizer", "text_encoder", "unet", "scheduler", "vae"):
        if not (root / part).is_dir():
            raise ModelLoadError(f"the diffusers folder {root} lacks the subfolder {part}/")
    te_class = _index_class(index, "text_encoder", index_file)
    if te_class == "BertModel":
        text_encoder = load_bert_encoder(root / "text_encoder", "text encoder")
    else:
        cls = getattr(transformers, te_class, None)
        if cls is None or not isinstance(cls, type):
            raise ModelLoadError(
                f"{index_file}: text_encoder class {te_class!r} is not in transformers "
                "(remote code is never run)"
            )
        _weights_file(root / "text_encoder", "text encoder", TEXT_WEIGHTS)
        text_encoder = _from_pretrained(cls, root / "text_encoder", "text encoder", dtype)
    tok_class = _index_class(index, "tokenizer", index_file)
    tok_cls = getattr(transformers, tok_class, None)
    if tok_cls is None or not isinstance(tok_cls, type):
        raise ModelLoadError(f"{index_file}: tokenizer class {tok_class!r} is not in transformers")
    try:
        tokenizer = tok_cls.from_pretrained(str(root / "tokenizer"))
    except Exception as err:  # noqa: BLE001 - any library failure becomes one clear error
        raise ModelLoadError(f"cannot read the tokenizer in {root / 'tokenizer'}: {err}") from err
    max_length = int(cfg.get("max_length") or tokenizer.model_max_length)
    tokenizer.model_max_length = max_length
    unet = _load_diffusers_model(UNet2DConditionModel, root / "unet", "unet", dtype)
    vae = _load_diffusers_model(AutoencoderKL, root / "vae", "VAE")
    try:
        scheduler = DDIMScheduler.from_config(DDIMScheduler.load_config(str(root / "scheduler")))
    except Exception as err:  # noqa: BLE001
        raise ModelLoadError(
            f"cannot read the scheduler config in {root / 'scheduler'}: {err}"
        ) from err
    return _assemble(
        "diffusers", tokenizer, text_encoder, unet, scheduler, vae, max_length, device, dtype
    )


def _load_demo(cfg: dict, device: torch.device, dtype: torch.dtype) -> AuditModel:
    ref = _require(cfg, "path", "demo")
    root = resolve_part(ref, "demo model folder", "model.path", allow_download=_allow(cfg))
    for part in ("tokenizer", "text_encoder", "unet", "scheduler"):
        if not (root / part).is_dir():
            raise ModelLoadError(
                f"the demo model folder {root} lacks the subfolder {part}/ (expected the layout "
                "written by the train_demo_model rule)"
            )
    text_encoder = load_bert_encoder(root / "text_encoder", "text encoder")
    tok_file = root / "tokenizer" / "tokenizer.json"
    if not tok_file.is_file():
        raise ModelLoadError(f"the demo tokenizer file {tok_file} is missing")
    tok_config = root / "tokenizer" / "tokenizer_config.json"
    saved_length = read_json(tok_config).get("model_max_length") if tok_config.is_file() else None
    max_length = int(
        cfg.get("max_length") or saved_length or text_encoder.config.max_position_embeddings
    )
    try:
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_file=str(tok_file), model_max_length=max_length, **DEMO_SPECIAL_TOKENS
        )
    except Exception as err:  # noqa: BLE001
        raise ModelLoadError(f"cannot read the demo tokenizer {tok_file}: {err}") from err
    unet = _load_diffusers_model(UNet2DConditionModel, root / "unet", "unet", dtype)
    try:
        scheduler = DDIMScheduler.from_config(DDIMScheduler.load_config(str(root / "scheduler")))
    except Exception as err:  # noqa: BLE001
        raise ModelLoadError(
            f"cannot read the scheduler config in {root / 'scheduler'}: {err}"
        ) from err
    return _assemble(
        "demo", tokenizer, text_encoder, unet, scheduler, None, max_length, device, dtype
    )


def _assemble(
    kind: str,
    tokenizer: Any,
    text_encoder: torch.nn.Module,
    unet: torch.nn.Module,
    scheduler: Any,
    vae: torch.nn.Module | None,
    max_length: int,
    device: torch.device,
    dtype: torch.dtype,
) -> AuditModel:
    """Check the parts fit together, move them to device/dtype and wrap them."""
    positions = getattr(text_encoder.config, "max_position_embeddings", None)
    if positions is not None and max_length > positions:
        raise ModelLoadError(
            f"tokenizer max_length {max_length} exceeds the text encoder's "
            f"max_position_embeddings {positions}; set model.max_length <= {positions}"
        )
    hidden = getattr(text_encoder.config, "hidden_size", None)
    cross = unet.config.cross_attention_dim
    if hidden is not None and cross is not None and hidden != cross:
        raise ModelLoadError(
            f"the text encoder's hidden size {hidden} does not match the unet's "
            f"cross_attention_dim {cross}: the parts do not belong together"
        )
    side = unet.config.sample_size
    side = int(side[0] if isinstance(side, (list, tuple)) else side)
    if vae is not None:
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        image_size = side * factor
        scaling = float(vae.config.scaling_factor)
        vae = vae.to(device).eval()
    else:
        image_size, scaling = side, 1.0
    return AuditModel(
        kind=kind,
        tokenizer=tokenizer,
        text_encoder=text_encoder.to(device=device, dtype=dtype).eval(),
        unet=unet.to(device).eval(),
        scheduler=scheduler,
        vae=vae,
        vae_scaling_factor=scaling,
        image_size=image_size,
        latent_shape=(int(unet.config.in_channels), side, side),
        max_length=max_length,
        dtype=dtype,
        device=device,
    )


def load_bert_encoder(folder: str | Path, part: str = "text encoder") -> BertModel:
    """A plain ``BertModel`` from a folder, without remote code.

    Works for CXR-BERT / BioViL-T (config without ``model_type``, ``BertForMaskedLM``-style
    weights prefixed ``bert.`` beside ``cls.*`` and projection heads, which are ignored) and for
    a folder saved by ``BertModel.save_pretrained``. Every ``BertModel`` parameter must be
    found in the weights; the pooler is built only when its weights are present.
    """
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"the {part} folder {folder} has no config.json")
    raw = read_json(config_file)
    known = set(BertConfig().to_dict())
    skip = {"architectures", "auto_map", "model_type", "transformers_version", "_name_or_path"}
    config = BertConfig(**{k: v for k, v in raw.items() if k in known and k not in skip})
    state = read_safetensors_weights(folder, part, TEXT_WEIGHTS)
    prefixed = {k[len("bert.") :]: v for k, v in state.items() if k.startswith("bert.")}
    if not prefixed:  # a bare BertModel checkpoint
        prefixed = {k: v for k, v in state.items() if k.split(".")[0] in _BERT_ROOTS}
    has_pooler = any(k.startswith("pooler.") for k in prefixed)
    model = BertModel(config, add_pooling_layer=has_pooler)
    expected = model.state_dict()
    missing = [k for k in expected if k not in prefixed]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise ModelLoadError(
            f"the {part} weights in {folder} lack {len(missing)} BertModel parameter(s): {shown}"
        )
    try:
        model.load_state_dict({k: prefixed[k] for k in expected}, strict=True)
    except RuntimeError as err:
        raise ModelLoadError(
            f"the {part} weights in {folder} do not fit its config.json: {err}"
        ) from err
    return model.eval()


_BERT_ROOTS = {"embeddings", "encoder", "pooler"}


def read_safetensors_weights(folder: Path, part: str, stem: str) -> dict[str, torch.Tensor]:
    """All tensors of ``<stem>.safetensors`` or of the shards its index lists."""
    files = _weights_file(folder, part, stem)
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update(load_safetensors(str(file)))
        except Exception as err:  # noqa: BLE001
            raise ModelLoadError(
                f"the {part} weights file {file} is not a readable safetensors file: {err}"
            ) from err
    return state


def _weights_file(folder: Path, part: str, stem: str) -> list[Path]:
    """The safetensors file(s) of a model folder (:func:`find_weights`), checked readable."""
    files = find_weights(folder, part, stem)
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                list(handle.keys())
        except Exception as err:  # noqa: BLE001
            raise ModelLoadError(
                f"the {part} weights file {file} is corrupt or not a safetensors file: {err}"
            ) from err
    return files


def _load_diffusers_model(
    cls: type, folder: Path, part: str, dtype: torch.dtype = torch.float32
) -> Any:
    _weights_file(folder, part, UNET_WEIGHTS)
    return _from_pretrained(cls, folder, part, dtype)


def _from_pretrained(cls: type, folder: Path, part: str, dtype: torch.dtype) -> Any:
    """``cls.from_pretrained`` on a local folder (safetensors only), errors made clear."""
    kwargs: dict[str, Any] = {"use_safetensors": True, "local_files_only": True}
    if issubclass(cls, ModelMixin):
        kwargs.update(torch_dtype=dtype, low_cpu_mem_usage=False)
    try:
        model = cls.from_pretrained(str(folder), **kwargs)
    except Exception as err:  # noqa: BLE001
        raise ModelLoadError(
            f"cannot load the {part} ({cls.__name__}) from {folder}: {err}"
        ) from err
    if not isinstance(model, ModelMixin):  # diffusers models got torch_dtype already
        model = model.to(dtype)
    return model.eval()


def _load_bert_tokenizer(folder: Path, max_length: int) -> Any:
    """A lower-casing WordPiece ``BertTokenizer`` from ``vocab.txt``, with max length set."""
    if not (folder / "vocab.txt").is_file():
        raise ModelLoadError(f"the tokenizer folder {folder} has no vocab.txt")
    try:
        return BertTokenizer.from_pretrained(
            str(folder), do_lower_case=True, model_max_length=max_length, local_files_only=True
        )
    except Exception as err:  # noqa: BLE001
        raise ModelLoadError(f"cannot read the BERT tokenizer in {folder}: {err}") from err


def _allow(cfg: dict) -> bool:
    """``model.allow_download``: may a hub id missing from the cache be downloaded?"""
    return bool(cfg.get("allow_download"))


def _require(cfg: dict, key: str, kind: str) -> str:
    value = cfg.get(key)
    if not value:
        raise ModelLoadError(f"model.{key} is required for kind {kind!r}")
    return str(value)


def _index_class(index: dict, part: str, index_file: Path) -> str:
    entry = index.get(part)
    if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not entry[1]:
        raise ModelLoadError(f"{index_file} has no [library, class] entry for {part!r}")
    return str(entry[1])
