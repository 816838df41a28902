"""Tests of copy detection: embeddings, nearest neighbours, thresholds and image sets."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from memaudit.copy_detection import search
from memaudit.copy_detection.embedding import (
    Embedder,
    area_matrix,
    pixel_embedding,
    square_resample,
)
from memaudit.copy_detection.images import (
    demo_training_images,
    list_images,
    read_image,
    training_image_loader,
)
from memaudit.copy_detection.reference import CopyReference, build_reference
from memaudit.copy_detection.search import copy_threshold, nearest_neighbours
from memaudit.copy_detection.spec import EmbeddingSpec
from memaudit.corpus.findings import FINDING_NAMES
from memaudit.corpus.phantoms import render_phantoms


def phantoms(n: int, seed: int, size: int = 32) -> np.ndarray:
    """Chest phantoms of the demo corpus with one or two random findings each."""
    rng = np.random.default_rng(seed)
    severity = np.zeros((n, len(FINDING_NAMES)), dtype=np.int64)
    for row in severity:
        row[rng.choice(len(FINDING_NAMES), size=rng.integers(1, 3), replace=False)] = 1
    return render_phantoms(severity, rng, size)


@pytest.fixture(scope="module")
def corpus() -> dict:
    train = phantoms(200, seed=0)
    return {
        "studies": pd.DataFrame({"study_id": np.arange(200), "image_index": np.arange(200)}),
        "report_map": pd.DataFrame({"study_id": np.arange(200)}),
        "images": train,
        "heldout": phantoms(100, seed=1),
    }


@pytest.fixture(scope="module")
def reference(corpus: dict, tmp_path_factory: pytest.TempPathFactory) -> CopyReference:
    folder = tmp_path_factory.mktemp("reference")
    files = [folder / n for n in ("train.npy", "train.parquet", "heldout.parquet", "ref.json")]
    meta = build_reference(
        {"embedding": "pixels", "side": 32, "batch_size": 64}, *files, demo=corpus
    )
    assert meta["n_train"] == 200 and meta["n_heldout"] == 100
    loaded = CopyReference.load(*files, percentile=95)
    # A rule's named inputs (here with a prefix) give the same reference.
    names = ("x_embeddings", "x_train_index", "x_heldout", "x_reference")
    named = dict(zip(names, files, strict=True))
    same = CopyReference.from_files(named, 95, None, prefix="x_")
    assert same.threshold == loaded.threshold
    assert np.array_equal(same.embeddings, loaded.embeddings)
    return loaded


def test_area_matrix_averages_blocks_and_conserves_mass() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((12, 12))
    blocks = image.reshape(4, 3, 4, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(square_resample(image, 4), blocks, rtol=1e-12)
    for n_in, n_out in ((10, 3), (3, 10), (7, 7)):
        weights = area_matrix(n_in, n_out)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0)
        np.testing.assert_allclose(weights.sum(axis=0), np.full(n_in, n_out / n_in))
    np.testing.assert_allclose(area_matrix(5, 5), np.eye(5))


def test_square_resample_centre_crops_non_square_images() -> None:
    image = np.zeros((8, 12))
    image[:, 2:10] = 1.0  # the centred 8 x 8 square is all ones
    np.testing.assert_allclose(square_resample(image, 4), np.ones((4, 4)))


def test_pixel_embedding_cosine_is_pixel_correlation() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 16, 16))
    emb = pixel_embedding(np.stack([a, b]))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-6)
    assert float(emb[0] @ emb[1]) == pytest.approx(
        np.corrcoef(a.ravel(), b.ravel())[0, 1], abs=1e-6
    )
    assert float(pixel_embedding(0.3 + 2 * a[None])[0] @ emb[0]) == pytest.approx(1.0, abs=1e-6)
    assert not pixel_embedding(np.full((1, 4, 4), 0.5)).any()  # no direction: zero vector


def test_nearest_neighbours_match_brute_force_across_chunks(monkeypatch) -> None:
    monkeypatch.setattr(search, "_REFERENCE_CHUNK", 7)
    monkeypatch.setattr(search, "_QUERY_CHUNK", 5)
    rng = np.random.default_rng(0)
    reference = pixel_embedding(rng.random((30, 6, 6)))
    queries = pixel_embedding(rng.random((12, 6, 6)))
    sims, rows = nearest_neighbours(queries, reference)
    # Chunked float32 products may round differently from one product. A 36-term dot product
    # of unit vectors is off by at most 36 * 2**-24 (about 2e-6) in float32, so similarities
    # agree within 1e-5, and the row is the brute-force one wherever the best two reference
    # rows are further apart than that.
    tol = 1e-5
    brute = queries.astype(np.float64) @ reference.T.astype(np.float64)
    np.testing.assert_allclose(sims, brute.max(axis=1), rtol=0, atol=tol)
    np.testing.assert_allclose(brute[np.arange(len(rows)), rows], brute.max(axis=1), atol=tol)
    second, best = np.sort(brute, axis=1)[:, -2:].T
    clear = best - second > 2 * tol
    assert clear.sum() >= 10  # so the row check below is not vacuous on this data
    np.testing.assert_array_equal(rows[clear], brute.argmax(axis=1)[clear])
    with pytest.raises(ValueError, match="do not match"):
        nearest_neighbours(queries, reference[:, :5])


def test_copy_detection_flags_copies_but_not_fresh_phantoms(
    corpus: dict, reference: CopyReference
) -> None:
    embed = Embedder(reference.spec)
    train = corpus["images"]
    rng = np.random.default_rng(7)
    noisy = np.clip(train[:20].astype(float) + rng.normal(0, 3, (20, 32, 32)), 0, 255)
    fresh = phantoms(40, seed=2)
    exact_sim, exact_row = nearest_neighbours(embed(list(train[:20])), reference.embeddings)
    noisy_sim, noisy_row = nearest_neighbours(embed(list(noisy / 255.0)), reference.embeddings)
    fresh_sim, _ = nearest_neighbours(embed(list(fresh)), reference.embeddings)
    np.testing.assert_array_equal(exact_row, np.arange(20))
    np.testing.assert_array_equal(noisy_row, np.arange(20))
    assert (exact_sim > 0.9999).all() and (exact_sim > reference.threshold).all()
    assert (noisy_sim > reference.threshold).all()
    assert np.mean(fresh_sim > reference.threshold) <= 0.15  # ~5 % expected, like held-out ones
    assert fresh_sim.max() < noisy_sim.min()
    assert reference.threshold == pytest.approx(np.percentile(reference.heldout_similarity, 95))


def test_copy_threshold_fixed_or_percentile() -> None:
    sims = np.linspace(0.0, 1.0, 101)
    assert copy_threshold(sims, 90) == pytest.approx(0.9)
    assert copy_threshold(sims, 90, fixed=0.5) == 0.5
    with pytest.raises(ValueError, match="copy_detection.heldout_images"):
        copy_threshold(np.zeros(0), 95)


def test_demo_training_images_dedupe_planted_copies_and_skip_unused_studies() -> None:
    images = phantoms(6, seed=3)
    images[4] = images[1]
    images[5] = images[1]  # three studies share one planted image
    studies = pd.DataFrame({"study_id": np.arange(10, 16), "image_index": np.arange(6)})
    report_map = pd.DataFrame({"study_id": [10, 11, 12, 14, 15]})  # study 13 has no prompt
    unique, index = demo_training_images(studies, report_map, images)
    assert index["image_index"].tolist() == [0, 1, 2]
    assert index["n_studies"].tolist() == [1, 3, 1]
    assert index["image_indices"].iloc[1].tolist() == [1, 4, 5]
    np.testing.assert_array_equal(unique, images[[0, 1, 2]])
    assert index["train_id"].tolist() == ["image_index:0", "image_index:1", "image_index:2"]


def _write_pngs(folder: Path, images: np.ndarray, prefix: str = "p") -> list[str]:
    names = []
    for i, image in enumerate(images):
        rel = f"{prefix}{i % 3}/img{i:03d}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / rel)
        names.append(rel)
    return sorted(names)


def test_folder_reference_equals_array_reference(corpus: dict, tmp_path: Path) -> None:
    train, held = corpus["images"][:30], corpus["heldout"][:10]
    names = _write_pngs(tmp_path / "train", train)
    _write_pngs(tmp_path / "held", held)
    files = [tmp_path / n for n in ("e.npy", "i.parquet", "h.parquet", "r.json")]
    cfg = {"train_images": str(tmp_path / "train"), "heldout_images": str(tmp_path / "held")}
    meta = build_reference({**cfg, "embedding": "pixels", "side": 16}, *files)
    assert meta["n_train"] == 30 and meta["n_heldout"] == 10
    index = pd.read_parquet(files[1])
    assert index["train_id"].tolist() == names
    order = [int(Path(n).stem[3:]) for n in names]
    np.testing.assert_allclose(
        np.load(files[0]),
        Embedder(EmbeddingSpec(kind="pixels", side=16))(list(train[order])),
        atol=1e-6,
    )
    loader = training_image_loader(index)
    np.testing.assert_allclose(loader(names[0]), train[order[0]] / 255.0)
    assert json.loads(files[3].read_text())["train_images"] == str(tmp_path / "train")


def test_list_file_and_limit_select_images_deterministically(tmp_path: Path) -> None:
    names = _write_pngs(tmp_path, phantoms(12, seed=4, size=8))
    assert list_images(tmp_path, "copy_detection.train_images") == names
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(names[:5]) + "\n")
    assert list_images(tmp_path, "k", listing) == names[:5]
    csv = tmp_path / "list.csv"
    pd.DataFrame({"path": names[3:6]}).to_csv(csv, index=False)
    assert list_images(tmp_path, "k", csv) == names[3:6]
    first = list_images(tmp_path, "k", limit=4)
    assert len(first) == 4 and first == list_images(tmp_path, "k", limit=4)
    assert set(first) <= set(names)
    listing.write_text("p0/missing.png\n")
    with pytest.raises(ValueError, match="copy_detection.train_list"):
        list_images(tmp_path, "k", listing)


def test_missing_image_folder_is_an_error_naming_the_key(tmp_path: Path) -> None:
    files = [tmp_path / n for n in ("e.npy", "i.parquet", "h.parquet", "r.json")]
    with pytest.raises(ValueError, match="copy_detection.train_images"):
        build_reference({"train_images": str(tmp_path / "absent")}, *files)
    (tmp_path / "train").mkdir()
    _write_pngs(tmp_path / "train", phantoms(3, seed=5, size=8))
    with pytest.raises(ValueError, match="copy_detection.heldout_images"):
        build_reference(
            {"train_images": str(tmp_path / "train"), "heldout_images": str(tmp_path / "no")},
            *files,
        )
    with pytest.raises(ValueError, match="copy_detection.train_images"):
        build_reference({}, *files)  # neither folders nor a demo corpus
    assert not any(f.exists() for f in files)


def test_read_image_handles_16_bit_and_rgb(tmp_path: Path) -> None:
    gray16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), gray16 / 65535.0, atol=1e-6)
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "b.jpg", quality=100)
    assert read_image(tmp_path / "b.jpg").shape == (4, 4)
    (tmp_path / "c.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read the image"):
        read_image(tmp_path / "c.png")


class _TinyNet(torch.nn.Module):
    """Stands in for a torchvision classifier: features, then an ``fc`` head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3, stride=2),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(2),
            torch.nn.Flatten(),
        )
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _fake_torchvision() -> types.ModuleType:
    """A stand-in ``torchvision`` whose ``models.get_model`` knows one architecture."""

    def get_model(name: str, weights: object = None) -> torch.nn.Module:
        assert weights is None  # nothing may be downloaded
        if name != "tinynet":
            raise ValueError(f"Unknown model {name}")
        return _TinyNet()

    module = types.ModuleType("torchvision")
    module.models = types.SimpleNamespace(get_model=get_model)
    return module


def test_torchvision_embedding_reads_safetensors_drops_the_head_and_detects_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", _fake_torchvision())
    weights = tmp_path / "tinynet.safetensors"
    save_file(_TinyNet().state_dict(), str(weights))
    network = {"arch": "tinynet", "weights": str(weights), "input_size": 16}
    spec = EmbeddingSpec.from_config({"embedding": "torchvision", "network": network})
    embedder = Embedder(spec)
    assert embedder.dimension == 16  # the 10-way fc head is gone: penultimate features
    train, fresh = phantoms(12, seed=1), phantoms(3, seed=2)
    reference = embedder(list(train))
    np.testing.assert_allclose(np.linalg.norm(reference, axis=1), 1.0, rtol=1e-5)
    similarity, rows = nearest_neighbours(embedder([train[5], *fresh]), reference)
    assert rows[0] == 5 and similarity[0] == pytest.approx(1.0, abs=1e-5)
    assert np.all(similarity[1:] < similarity[0] - 1e-4)


class _TinyTimmNet(_TinyNet):
    """Stands in for a timm model: ``reset_classifier`` and a ``pretrained_cfg``."""

    pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}

    def reset_classifier(self, num_classes: int) -> None:
        assert num_classes == 0
        self.fc = torch.nn.Identity()


def _fake_timm() -> types.ModuleType:
    def create_model(name: str, pretrained: bool = True) -> torch.nn.Module:
        assert pretrained is False  # nothing may be downloaded
        if name != "tinynet":
            raise RuntimeError(f"Unknown model ({name})")
        return _TinyTimmNet()

    module = types.ModuleType("timm")
    module.create_model = create_model
    return module


def test_timm_embedding_uses_pooled_features_and_the_models_normalisation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "timm", _fake_timm())
    weights = tmp_path / "tinynet.safetensors"
    save_file(_TinyTimmNet().state_dict(), str(weights))
    network = {"arch": "tinynet", "weights": str(weights), "input_size": 16}
    embedder = Embedder(EmbeddingSpec.from_config({"embedding": "timm", "network": network}))
    assert embedder.dimension == 16
    images = phantoms(4, seed=3)
    prepared = np.stack([embedder.prepare(image) for image in images])
    # reference: the same weights, classifier dropped, the model's own mean and std
    reference_net = _TinyTimmNet().eval()
    with torch.no_grad():
        x = (torch.from_numpy(prepared)[:, None].expand(-1, 3, -1, -1) - 0.5) / 0.25
        expected = torch.nn.functional.normalize(reference_net.features(x), dim=1).numpy()
    np.testing.assert_allclose(embedder(list(images)), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="copy_detection.network.arch 'vit_huge'.*timm model"):
        Embedder(EmbeddingSpec(kind="timm", arch="vit_huge", weights=str(weights)))
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ValueError, match="but timm is not installed"):
        Embedder(EmbeddingSpec(kind="timm", arch="tinynet", weights=str(weights)))


def test_torchvision_embedding_errors_name_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "tinynet.safetensors"
    save_file(_TinyNet().state_dict(), str(weights))

    def spec(**kw: object) -> EmbeddingSpec:
        return EmbeddingSpec(
            **{"kind": "torchvision", "arch": "tinynet", "weights": str(weights), **kw}
        )

    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` fails
    with pytest.raises(ValueError, match="torchvision is not installed"):
        Embedder(spec())
    broken = tmp_path / "broken"
    (broken / "torchvision").mkdir(parents=True)
    (broken / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n'
    )
    monkeypatch.delitem(sys.modules, "torchvision")
    monkeypatch.syspath_prepend(str(broken))
    with pytest.raises(ValueError, match="does not load with torch.*nms does not exist"):
        Embedder(spec())
    monkeypatch.setitem(sys.modules, "torchvision", _fake_torchvision())
    with pytest.raises(ValueError, match="copy_detection.network.arch 'resnet9000'"):
        Embedder(spec(arch="resnet9000"))
    with pytest.raises(ValueError, match="copy_detection.network.arch is required"):
        Embedder(spec(arch=None))
    with pytest.raises(ValueError, match="copy_detection.network.weights .* is not a file"):
        Embedder(spec(weights=str(tmp_path / "missing.safetensors")))
    pickled = tmp_path / "w.pt"
    torch.save(_TinyNet().state_dict(), pickled)
    with pytest.raises(ValueError, match="not a .safetensors file; pickled"):
        Embedder(spec(weights=str(pickled)))
    other = tmp_path / "other.safetensors"
    save_file({"fc.weight": torch.zeros(3, 3)}, str(other))
    with pytest.raises(ValueError, match="do not fit tinynet"):
        Embedder(spec(weights=str(other)))
    with pytest.raises(ValueError, match="copy_detection.embedding"):
        EmbeddingSpec(kind="clip")
