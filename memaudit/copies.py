"""Copy detection: each generation's nearest training image, flagged against held-out reals.

Following Somepalli et al. and Dar et al., training images and generations are embedded, each
generation's nearest training image is found by cosine similarity, and a generation is called
a copy when that similarity exceeds the configured percentile (default the 95th) of the
nearest-neighbour similarities of *held-out* real images (never trained on) to the training
set: a generation is flagged only if it is closer to a training image than almost every fresh
real image is.

Embeddings (config ``copy_detection.embedding``):

- ``pixels`` (default, weight-free): the image is centre-cropped to a square, area-averaged
  down to ``side`` x ``side`` pixels, its mean is subtracted and it is L2-normalised, so the
  cosine similarity of two embeddings is the Pearson correlation of their downsampled pixels.
- ``torchvision`` / ``timm``: the penultimate (pooled) features of a torchvision or timm
  architecture (``copy_detection.network.arch``) with local safetensors weights
  (``copy_detection.network.weights``; never unpickled, never downloaded), L2-normalised. The
  grayscale image is repeated over three channels and normalised with ImageNet statistics (a
  timm model's own ``pretrained_cfg`` mean and std where it has them). Only available when the
  package is importable.

Training sets: on the demo the corpus images the model was trained on (``images.npy`` rows of
the studies whose report became a prompt; identical planted copies are embedded once and keep
the list of their rows); for real runs a folder of PNG/JPG files (recursive, e.g.
MIMIC-CXR-JPG), optionally restricted by a list file and a deterministic size limit. Nearest
neighbours are found with chunked matrix products, so 377k training images fit in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from memaudit.atomic import atomic_npy, write_atomically

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
EMBEDDINGS = ("pixels", "torchvision", "timm")
# ImageNet normalisation of torchvision's pretrained models (and timm's default).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Rows of the training-embedding matrix per matrix product in the nearest-neighbour search.
_REFERENCE_CHUNK = 65536
_QUERY_CHUNK = 4096


# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingSpec:
    """How images are embedded for copy detection (see the module docstring)."""

    kind: str = "pixels"
    side: int = 32
    arch: str | None = None
    weights: str | None = None
    input_size: int = 224

    def __post_init__(self) -> None:
        if self.kind not in EMBEDDINGS:
            raise ValueError(
                f"copy_detection.embedding must be one of {list(EMBEDDINGS)}, got {self.kind!r}"
            )
        if not isinstance(self.side, int) or self.side < 2:
            raise ValueError(f"copy_detection.side must be an integer >= 2, got {self.side!r}")
        if not isinstance(self.input_size, int) or self.input_size < 8:
            raise ValueError(
                f"copy_detection.network.input_size must be an integer >= 8, "
                f"got {self.input_size!r}"
            )

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> EmbeddingSpec:
        """From a config ``copy_detection`` block (other keys of the block are ignored)."""
        tv = dict(cfg.get("network") or {})
        return cls(
            kind=cfg.get("embedding", "pixels"),
            side=int(cfg.get("side", 32)),
            arch=tv.get("arch"),
            weights=tv.get("weights"),
            input_size=int(tv.get("input_size") or 224),
        )

    @property
    def prepared_side(self) -> int:
        """Side of the square each image is resampled to before embedding."""
        return self.side if self.kind == "pixels" else self.input_size


@lru_cache(maxsize=64)
def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of area resampling: output cell i averages the input cells.

    Output cell i covers [i·n_in/n_out, (i+1)·n_in/n_out) in input coordinates; each input
    cell contributes the length of its overlap with that interval, rows sum to one. Works for
    down- and upsampling; ``A @ image @ A.T`` resamples a square image.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got {n_in} -> {n_out}")
    edges = np.arange(n_out + 1, dtype=np.float64) * n_in / n_out
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0.0, None)
    weights = overlap / overlap.sum(axis=1, keepdims=True)
    weights.setflags(write=False)
    return weights


def as_float_image(image: np.ndarray) -> np.ndarray:
    """One grayscale image as float64 in [0, 1] (uint8 is divided by 255, uint16 by 65535)."""
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float64) / 65535.0
    return array.astype(np.float64)


def square_resample(image: np.ndarray, side: int) -> np.ndarray:
    """Centre-crop a grayscale image to a square and area-resample it to ``side`` x ``side``."""
    pixels = as_float_image(image)
    h, w = pixels.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = pixels[top : top + s, left : left + s]
    weights = area_matrix(s, side)
    return weights @ crop @ weights.T


def pixel_embedding(prepared: np.ndarray) -> np.ndarray:
    """[N, side, side] resampled images -> [N, side²] float32: mean removed, unit length.

    A constant image has no direction and gets the zero vector (similarity 0 to everything).
    """
    flat = np.asarray(prepared, dtype=np.float64).reshape(len(prepared), -1)
    centred = flat - flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    safe = np.where(norms > 1e-12, norms, 1.0)
    return np.where(norms > 1e-12, centred / safe, 0.0).astype(np.float32)


class Embedder:
    """Images (each any size, grayscale) -> unit-length embedding rows, per :class:`EmbeddingSpec`.

    ``prepare`` resamples one image to the embedding's square input; ``embed_prepared`` turns
    a stack of prepared images into embeddings; calling the object does both.
    """

    def __init__(self, spec: EmbeddingSpec, device: str | torch.device | None = None) -> None:
        self.spec = spec
        if device is None:  # a network on the GPU when there is one; pixels stay on the CPU
            device = "cuda" if torch.cuda.is_available() and spec.kind != "pixels" else "cpu"
        self.device = torch.device(device)
        self._network, self._mean, self._std = None, _IMAGENET_MEAN, _IMAGENET_STD
        if spec.kind != "pixels":
            self._network, self._mean, self._std = _feature_network(spec, self.device)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return square_resample(image, self.spec.prepared_side).astype(np.float32)

    def embed_prepared(self, prepared: np.ndarray) -> np.ndarray:
        if self._network is None:
            return pixel_embedding(prepared)
        x = torch.from_numpy(np.asarray(prepared, dtype=np.float32))[:, None]
        x = x.expand(-1, 3, -1, -1)
        mean = torch.tensor(self._mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self._std, dtype=torch.float32).view(1, 3, 1, 1)
        x = ((x - mean) / std).to(self.device)
        with torch.no_grad():
            features = self._network(x).flatten(1).float()
        features = torch.nn.functional.normalize(features, dim=1)
        return features.cpu().numpy().astype(np.float32)

    def __call__(self, images: Iterable[np.ndarray]) -> np.ndarray:
        prepared = [self.prepare(image) for image in images]
        if not prepared:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self.embed_prepared(np.stack(prepared))

    @cached_property
    def dimension(self) -> int:
        """Length of one embedding."""
        if self._network is None:
            return self.spec.side**2
        probe = np.zeros((1, self.spec.input_size, self.spec.input_size), dtype=np.float32)
        probe[0, 0, 0] = 1.0
        return int(self.embed_prepared(probe).shape[1])


def _import_backend(kind: str) -> Any:
    """The torchvision or timm module, or a ValueError saying why it cannot be used."""
    try:
        return importlib.import_module(kind)
    except ImportError as err:
        raise ValueError(
            f"copy_detection.embedding is {kind!r} but {kind} is not installed in this "
            f"environment; install a {kind} build matching torch, or set "
            "copy_detection.embedding: pixels"
        ) from err
    except Exception as err:  # noqa: BLE001 - a build for another torch fails inside its import
        raise ValueError(
            f"copy_detection.embedding is {kind!r} but {kind} does not load with torch "
            f"{torch.__version__} ({type(err).__name__}: {err}); install the {kind} build made "
            "for this torch (same version pairing and CPU/CUDA variant), or set "
            "copy_detection.embedding: pixels"
        ) from err


def _feature_network(
    spec: EmbeddingSpec, device: torch.device
) -> tuple[torch.nn.Module, tuple[float, ...], tuple[float, ...]]:
    """(network without its classifier, input mean, input std) of a torchvision or timm
    architecture with local safetensors weights."""
    backend = _import_backend(spec.kind)
    if not spec.arch:
        raise ValueError(
            f"copy_detection.network.arch is required for the {spec.kind} embedding (e.g. resnet50)"
        )
    weights = Path(spec.weights or "")
    if not spec.weights or not weights.is_file():
        raise ValueError(
            f"copy_detection.network.weights {spec.weights!r} is not a file; point it at "
            "local safetensors weights of the architecture (nothing is downloaded)"
        )
    if weights.suffix != ".safetensors":
        raise ValueError(
            f"copy_detection.network.weights {str(weights)!r} is not a .safetensors file; "
            "pickled checkpoints are never loaded"
        )
    from safetensors.torch import load_file  # noqa: PLC0415

    try:
        if spec.kind == "timm":
            network = backend.create_model(spec.arch, pretrained=False)
        else:
            network = backend.models.get_model(spec.arch, weights=None)
    except (ValueError, RuntimeError, KeyError) as err:
        raise ValueError(
            f"copy_detection.network.arch {spec.arch!r} is not a {spec.kind} model: {err}"
        ) from err
    try:
        network.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"copy_detection.network.weights {str(weights)!r} do not fit {spec.arch}: {err}"
        ) from err
    mean, std = _IMAGENET_MEAN, _IMAGENET_STD
    if spec.kind == "timm":
        network.reset_classifier(0)  # pooled penultimate features
        cfg = getattr(network, "pretrained_cfg", None) or {}
        if len(cfg.get("mean") or ()) == 3 and len(cfg.get("std") or ()) == 3:
            mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    else:
        for head in ("fc", "classifier", "head", "heads"):
            if hasattr(network, head):
                setattr(network, head, torch.nn.Identity())
                break
    return network.eval().to(device), mean, std


# --------------------------------------------------------------------------------------------
# Image sets
# --------------------------------------------------------------------------------------------


def read_image(path: str | Path, side_hint: int | None = None) -> np.ndarray:
    """A PNG/JPG file as a grayscale float64 image in [0, 1].

    For JPEGs, ``side_hint`` lets the decoder scale down in the DCT domain (up to 8x, never
    below twice the hint), which makes reading 3000-pixel radiographs several times faster.
    """
    try:
        with Image.open(path) as handle:
            if side_hint and handle.format == "JPEG":
                handle.draft("L", (2 * side_hint, 2 * side_hint))
            if handle.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(handle, dtype=np.float64)
                top = 65535.0 if handle.mode.startswith("I;16") else max(1.0, float(array.max()))
                return np.clip(array / top, 0.0, 1.0)
            return np.asarray(handle.convert("L"), dtype=np.float64) / 255.0
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the image {path}: {err}") from err


def hash_order(names: Iterable[str], salt: str) -> list[str]:
    """``names`` in a deterministic pseudo-random order (SHA-256 of salt + name)."""
    return sorted(names, key=lambda n: hashlib.sha256(f"{salt}:{n}".encode()).hexdigest())


def list_images(
    folder: str | Path,
    key: str,
    list_file: str | Path | None = None,
    limit: int | None = None,
    list_key: str = "copy_detection.train_list",
) -> list[str]:
    """Relative POSIX paths of the PNG/JPG files under ``folder`` (recursive), sorted.

    ``list_file`` (a text file with one relative path per line, or a CSV with a ``path``
    column) restricts the set; a listed file that does not exist is an error. ``limit`` keeps
    a deterministic pseudo-random subset of that size (by path hash, independent of listing
    order). ``key`` names the config key in errors.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{key}: the image folder {str(folder)!r} does not exist")
    if list_file is not None:
        listed = _read_list(Path(list_file), list_key)
        missing = [p for p in listed if not (root / p).is_file()]
        if missing:
            raise ValueError(
                f"{list_key}: {len(missing)} listed image(s) are not under {root}, "
                f"e.g. {missing[:3]}"
            )
        paths = sorted(set(listed))
    else:
        paths = sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
    if limit is not None:
        paths = sorted(hash_order(paths, "memaudit-copies")[: int(limit)])
    if not paths:
        raise ValueError(f"{key}: no PNG/JPG images under {str(folder)!r}")
    return paths


def _read_list(path: Path, key: str) -> list[str]:
    if not path.is_file():
        raise ValueError(f"{key}: the list file {str(path)!r} does not exist")
    if path.suffix.lower() in (".csv", ".tsv"):
        table = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
        if "path" not in table.columns:
            raise ValueError(f"{key}: the list file {path} has no 'path' column")
        entries = table["path"].astype(str).tolist()
    else:
        entries = path.read_text(encoding="utf-8").splitlines()
    return [Path(e.strip()).as_posix() for e in entries if e.strip()]


def demo_training_images(
    studies: pd.DataFrame, report_map: pd.DataFrame, images: np.ndarray
) -> tuple[np.ndarray, pd.DataFrame]:
    """The distinct images the demo model was trained on, and their index table.

    Training pairs are the studies whose report became a prompt (``report_map``), as
    :func:`memaudit.training.demo_training_pairs` builds them. Identical images (the planted
    copies) are kept once, at their lowest ``images.npy`` row; the table lists every row
    sharing the image (``image_indices``) and how many training studies used it.
    """
    for name, table, column in (
        ("studies", studies, "image_index"),
        ("studies", studies, "study_id"),
        ("report_map", report_map, "study_id"),
    ):
        if column not in table.columns:
            raise ValueError(f"{name} table has no {column!r} column")
    used = set(report_map["study_id"].dropna().astype("int64"))
    rows = sorted(
        int(i)
        for sid, i in zip(studies["study_id"], studies["image_index"], strict=True)
        if int(sid) in used
    )
    images = np.asarray(images)
    if rows and (rows[0] < 0 or rows[-1] >= len(images)):
        raise ValueError(f"studies image_index out of range for {len(images)} images")
    groups: dict[bytes, list[int]] = {}
    for row in rows:
        groups.setdefault(hashlib.sha1(images[row].tobytes()).digest(), []).append(row)
    members = sorted(groups.values(), key=lambda g: g[0])
    firsts = [g[0] for g in members]
    index = pd.DataFrame(
        {
            "train_id": [f"image_index:{i}" for i in firsts],
            "image_index": np.asarray(firsts, dtype=np.int64),
            "path": pd.Series([None] * len(firsts), dtype=object),
            "image_indices": [np.asarray(g, dtype=np.int64) for g in members],
            "n_studies": np.asarray([len(g) for g in members], dtype=np.int64),
        }
    )
    chosen = images[firsts] if firsts else images[:0]
    return chosen, index


def embed_arrays(
    images: np.ndarray, embedder: Embedder, batch_size: int = 512, progress: TextIO | None = None
) -> np.ndarray:
    """Embeddings [N, d] of an image stack [N, H, W] (uint8 or float in [0, 1])."""
    out = [np.zeros((0, embedder.dimension), dtype=np.float32)]
    bar = tqdm(total=len(images), unit="img", desc="embed", file=progress, disable=not progress)
    for lo in range(0, len(images), batch_size):
        batch = images[lo : lo + batch_size]
        out.append(embedder(list(batch)))
        bar.update(len(batch))
    bar.close()
    return np.concatenate(out)


def embed_files(
    root: str | Path,
    paths: Sequence[str],
    embedder: Embedder,
    batch_size: int = 256,
    workers: int = 2,
    progress: TextIO | None = None,
) -> np.ndarray:
    """Embeddings [N, d] of image files (relative ``paths`` under ``root``), in order.

    Files are decoded and resampled by ``workers`` threads (the decoders release the GIL).
    """
    root = Path(root)
    side = embedder.spec.prepared_side

    def prepare(rel: str) -> np.ndarray:
        return embedder.prepare(read_image(root / rel, side_hint=side))

    out = [np.zeros((0, embedder.dimension), dtype=np.float32)]
    bar = tqdm(total=len(paths), unit="img", desc="embed", file=progress, disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for lo in range(0, len(paths), batch_size):
            batch = list(pool.map(prepare, paths[lo : lo + batch_size]))
            out.append(embedder.embed_prepared(np.stack(batch)))
            bar.update(len(batch))
    bar.close()
    return np.concatenate(out)


# --------------------------------------------------------------------------------------------
# Nearest neighbours and the copy threshold
# --------------------------------------------------------------------------------------------


def nearest_neighbours(
    queries: np.ndarray, reference: np.ndarray, device: str | torch.device = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarity, row) of each query's nearest reference row.

    Both inputs are unit-length rows. The search runs over reference chunks of
    ``_REFERENCE_CHUNK`` rows and query chunks of ``_QUERY_CHUNK`` rows, keeping a running
    maximum, so memory stays bounded however large the training set is. Ties go to the lower
    reference row.
    """
    queries = np.asarray(queries, dtype=np.float32)
    reference = np.asarray(reference, dtype=np.float32)
    if queries.ndim != 2 or reference.ndim != 2 or queries.shape[1] != reference.shape[1]:
        raise ValueError(
            f"embeddings do not match: queries {queries.shape}, reference {reference.shape}"
        )
    if len(reference) == 0:
        raise ValueError("the reference (training) embedding set is empty")
    device = torch.device(device)
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    where = np.zeros(len(queries), dtype=np.int64)
    for q0 in range(0, len(queries), _QUERY_CHUNK):
        q = torch.from_numpy(queries[q0 : q0 + _QUERY_CHUNK]).to(device)
        run_best = torch.full((len(q),), -torch.inf, device=device)
        run_where = torch.zeros(len(q), dtype=torch.int64, device=device)
        for r0 in range(0, len(reference), _REFERENCE_CHUNK):
            r = torch.from_numpy(reference[r0 : r0 + _REFERENCE_CHUNK]).to(device)
            sims = q @ r.T
            values, rows = sims.max(dim=1)
            better = values > run_best
            run_best = torch.where(better, values, run_best)
            run_where = torch.where(better, rows + r0, run_where)
        best[q0 : q0 + len(q)] = run_best.cpu().numpy()
        where[q0 : q0 + len(q)] = run_where.cpu().numpy()
    return best, where


def copy_threshold(
    heldout_similarity: np.ndarray, percentile: float = 95.0, fixed: float | None = None
) -> float:
    """The similarity above which a generation is a copy.

    ``fixed`` (config ``copy_detection.threshold``) wins when given; otherwise the
    ``percentile`` of the held-out images' nearest-training-image similarities.
    """
    if fixed is not None:
        return float(fixed)
    values = np.asarray(heldout_similarity, dtype=np.float64)
    if values.size == 0:
        raise ValueError(
            "no held-out images to calibrate the copy threshold: configure "
            "copy_detection.heldout_images or a fixed copy_detection.threshold"
        )
    return float(np.percentile(values, percentile))


@dataclass
class CopyReference:
    """What copy detection compares generations with: embeddings and the threshold."""

    embeddings: np.ndarray
    index: pd.DataFrame
    threshold: float
    percentile: float | None
    spec: EmbeddingSpec
    heldout_similarity: np.ndarray

    @classmethod
    def load(
        cls,
        embeddings: str | Path,
        index: str | Path,
        heldout: str | Path,
        reference: str | Path,
        percentile: float = 95.0,
        fixed: float | None = None,
    ) -> CopyReference:
        """From the files :func:`build_reference` wrote, with the threshold for ``percentile``."""
        meta = json.loads(Path(reference).read_text())
        spec = EmbeddingSpec(**meta["embedding"])
        heldout_table = pd.read_parquet(heldout)
        sims = heldout_table["similarity"].to_numpy(dtype=np.float64)
        return cls(
            embeddings=np.load(embeddings),
            index=pd.read_parquet(index),
            threshold=copy_threshold(sims, percentile, fixed),
            percentile=None if fixed is not None else float(percentile),
            spec=spec,
            heldout_similarity=sims,
        )


def build_reference(
    cfg: Mapping[str, Any],
    out_embeddings: str | Path,
    out_index: str | Path,
    out_heldout: str | Path,
    out_reference: str | Path,
    demo: Mapping[str, Any] | None = None,
    workers: int = 2,
    progress: TextIO | None = None,
) -> dict[str, Any]:
    """Embed the training and held-out images and write the copy-detection reference.

    ``cfg`` is the config ``copy_detection`` block. When ``cfg["train_images"]`` is set the
    training and held-out sets are image folders (``heldout_images`` is then required unless
    a fixed ``threshold`` is configured); otherwise ``demo`` gives the demo corpus arrays
    (``studies``, ``report_map``, ``images``, ``heldout``). Writes the training embeddings
    (``.npy`` float32 [N, d]), their index (``train_id``, ``image_index`` or ``path``), the
    held-out nearest neighbours (``heldout_id``, ``nearest_train_id``, ``similarity``) and a
    JSON description; returns that description.
    """
    spec = EmbeddingSpec.from_config(cfg)
    embedder = Embedder(spec)
    device = embedder.device
    batch = int(cfg.get("batch_size") or 256)
    if cfg.get("train_images"):
        train_root = Path(cfg["train_images"])
        train_paths = list_images(
            train_root, "copy_detection.train_images", cfg.get("train_list"), cfg.get("train_limit")
        )
        train = embed_files(train_root, train_paths, embedder, batch, workers, progress)
        index = pd.DataFrame(
            {
                "train_id": train_paths,
                "image_index": np.full(len(train_paths), -1, dtype=np.int64),
                "path": [str(train_root / p) for p in train_paths],
                "image_indices": [np.zeros(0, dtype=np.int64)] * len(train_paths),
                "n_studies": np.ones(len(train_paths), dtype=np.int64),
            }
        )
        if cfg.get("heldout_images"):
            held_root = Path(cfg["heldout_images"])
            held_paths = list_images(
                held_root, "copy_detection.heldout_images", None, cfg.get("heldout_limit")
            )
            heldout = embed_files(held_root, held_paths, embedder, batch, workers, progress)
            heldout_ids = held_paths
        else:  # the threshold must then be fixed (checked where it is computed)
            heldout, heldout_ids = np.zeros((0, train.shape[1]), dtype=np.float32), []
        source = {"train_images": str(train_root), "heldout_images": cfg.get("heldout_images")}
    elif demo is not None:
        images, index = demo_training_images(demo["studies"], demo["report_map"], demo["images"])
        train = embed_arrays(images, embedder, batch, progress)
        held_images = np.asarray(demo["heldout"])
        limit = cfg.get("heldout_limit")
        held_images = held_images[: int(limit)] if limit is not None else held_images
        heldout = embed_arrays(held_images, embedder, batch, progress)
        heldout_ids = [f"heldout:{i}" for i in range(len(held_images))]
        source = {"train_images": "demo corpus images.npy", "heldout_images": "heldout.npy"}
    else:
        raise ValueError(
            "copy_detection.train_images is not set and there is no demo corpus: nothing to "
            "compare generations with"
        )
    if len(train) == 0:
        raise ValueError("copy detection found no training images to embed")
    sims, rows = (
        nearest_neighbours(heldout, train, device)
        if len(heldout)
        else (np.zeros(0, np.float32), np.zeros(0, np.int64))
    )
    held_table = pd.DataFrame(
        {
            "heldout_id": pd.Series(heldout_ids, dtype=object),
            "nearest_train_id": pd.Series(index["train_id"].to_numpy()[rows], dtype=object),
            "similarity": sims.astype(np.float64),
        }
    )
    quantiles = {
        f"p{q}": float(np.percentile(sims, q)) if len(sims) else None for q in (50, 90, 95, 99)
    }
    meta = {
        "embedding": dataclasses.asdict(spec),
        "dimension": int(train.shape[1]),
        "n_train": len(train),
        "n_train_studies": int(index["n_studies"].sum()),
        "n_heldout": len(heldout_ids),
        "heldout_similarity": quantiles,
        **source,
    }
    atomic_npy(out_embeddings, train.astype(np.float32))
    write_atomically({out_index: index, out_heldout: held_table, out_reference: meta})
    return meta


def training_image_loader(
    index: pd.DataFrame, pixels: str | Path | None = None
) -> Callable[[str], np.ndarray]:
    """A function train_id -> grayscale float image in [0, 1], for figures.

    Demo training images come from the ``images.npy`` array (``pixels``) by ``image_index``;
    folder images are read from their ``path``.
    """
    rows = index.set_index("train_id")
    array = np.load(pixels, mmap_mode="r") if pixels else None

    def load(train_id: str) -> np.ndarray:
        if train_id not in rows.index:
            raise ValueError(f"training image {train_id!r} is not in the training index")
        row = rows.loc[train_id]
        if array is not None and int(row["image_index"]) >= 0:
            return as_float_image(np.asarray(array[int(row["image_index"])]))
        if row["path"] is None:
            raise ValueError(f"training image {train_id!r} has neither pixels nor a path")
        return read_image(row["path"])

    return load
