"""Tests of the learned copy detector: augmentations, InfoNCE, encoder, training, files."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from memaudit.copy_detection.augment import augment
from memaudit.copy_detection.detector import resampled_stack, train_detector
from memaudit.copy_detection.embedding import Embedder
from memaudit.copy_detection.encoder import (
    CopyEncoder,
    info_nce,
    load_encoder,
    save_encoder,
    train_encoder,
)
from memaudit.copy_detection.search import nearest_neighbours
from memaudit.copy_detection.spec import DetectorSpec, EmbeddingSpec

# Shifts of up to 1.3 pixels of 16: the shifted-copy test moves a copy by one pixel.
TINY = DetectorSpec(
    input_size=16,
    channels=(8, 16),
    dimension=16,
    steps=80,
    batch_size=16,
    learning_rate=0.005,
    shift=0.08,
)


def smooth_images(n: int, size: int, seed: int) -> np.ndarray:
    """Random smooth blobs, uint8 [n, size, size]: images a copy detector can tell apart."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = np.zeros((n, size, size))
    for i in range(n):
        for _ in range(4):
            cx, cy, r, a = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.3), 1
            out[i] += a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / r**2)
    out = out / out.max(axis=(1, 2), keepdims=True)
    return np.rint(out * 255).astype(np.uint8)


def test_info_nce_matches_a_hand_computed_value_and_rewards_aligned_pairs():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    # View 0 against views 1, 2, 3 (cosines 0, 1, 0): -log(e^{1/t} / (e^0 + e^{1/t} + e^0)).
    expected = -math.log(math.exp(1 / t) / (2 + math.exp(1 / t)))
    assert float(info_nce(a, b, t)) == pytest.approx(expected, rel=1e-6)
    swapped = info_nce(a, b.flip(0), t)  # each view's pair is now orthogonal to it
    assert float(swapped) > float(info_nce(a, b, t)) + 1.0
    with pytest.raises(ValueError, match="two"):
        info_nce(a[:1], b[:1], t)


def test_augment_keeps_shape_dtype_and_range_and_is_seeded():
    images = torch.rand(6, 1, 16, 16)
    spec = DetectorSpec(noise=0.3, contrast=0.5, rotation=20, shift=0.2, crop_scale=0.5)
    view = augment(images, spec, torch.Generator().manual_seed(1))
    assert view.shape == images.shape and view.dtype == images.dtype
    assert float(view.min()) >= 0.0 and float(view.max()) <= 1.0
    again = augment(images, spec, torch.Generator().manual_seed(1))
    other = augment(images, spec, torch.Generator().manual_seed(2))
    assert torch.equal(view, again)
    assert not torch.allclose(view, other)
    with pytest.raises(ValueError, match="B, 1, S, S"):
        augment(torch.rand(2, 3, 16, 16), spec, torch.Generator())


def test_augment_without_magnitudes_is_the_identity_and_hflip_mirrors():
    images = torch.rand(3, 1, 12, 12)
    still = DetectorSpec(shift=0, rotation=0, crop_scale=1, blur=0, contrast=0, noise=0)
    out = augment(images, still, torch.Generator().manual_seed(0))
    assert torch.allclose(out, images, atol=1e-5)
    flips = dataclasses.replace(still, hflip=True)
    out = augment(images.repeat(8, 1, 1, 1), flips, torch.Generator().manual_seed(0))
    mirrored = [torch.allclose(o, images[i % 3].flip(-1), atol=1e-5) for i, o in enumerate(out)]
    unchanged = [torch.allclose(o, images[i % 3], atol=1e-5) for i, o in enumerate(out)]
    assert all(m or u for m, u in zip(mirrored, unchanged, strict=True))
    assert any(mirrored) and any(unchanged)


def test_encoder_checks_its_input_size_and_embeds_unit_rows():
    encoder = CopyEncoder(16, (8, 16), 12)
    out = encoder.embed(torch.rand(5, 1, 16, 16))
    assert out.shape == (5, 12)
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)
    with pytest.raises(ValueError, match="16x16"):
        encoder(torch.rand(1, 1, 32, 32))


def test_detector_spec_rejects_shapes_the_encoder_cannot_take():
    with pytest.raises(ValueError, match="divisible"):
        DetectorSpec(input_size=20, channels=(8, 16, 32))
    with pytest.raises(ValueError, match="batch_size"):
        DetectorSpec(batch_size=1)
    with pytest.raises(ValueError, match="unknown"):
        DetectorSpec.from_config({"epochs": 3})


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    images = smooth_images(24, 16, seed=0)
    encoder, history = train_encoder(images, TINY)
    return images, encoder, history


def test_training_lowers_the_loss_and_is_deterministic(trained):
    images, encoder, history = trained
    losses = history["loss"]
    assert len(losses) == TINY.steps
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.5
    short = dataclasses.replace(TINY, steps=3)
    one, _ = train_encoder(images, short)
    two, _ = train_encoder(images, short)
    for (name, p), (_, q) in zip(one.state_dict().items(), two.state_dict().items(), strict=True):
        assert torch.equal(p, q), name


def test_an_exact_and_a_shifted_copy_find_their_source(trained):
    images, encoder, _ = trained
    x = torch.from_numpy(images.astype(np.float32) / 255)[:, None]
    train = encoder.embed(x).numpy()
    shifted = torch.roll(x, shifts=(1, -1), dims=(2, 3))  # one pixel down and left
    noisy = (x + 0.03 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(
        0, 1
    )
    for query in (x, shifted, noisy):
        sims, rows = nearest_neighbours(encoder.embed(query).numpy(), train)
        assert (rows == np.arange(len(images))).mean() >= 0.95


def test_saved_weights_rebuild_the_encoder_and_feed_the_embedder(trained, tmp_path):
    images, encoder, _ = trained
    path = tmp_path / "detector.safetensors"
    save_encoder(encoder, path, TINY)
    loaded = load_encoder(path)
    x = torch.from_numpy(images.astype(np.float32) / 255)[:, None]
    assert torch.allclose(loaded.embed(x), encoder.embed(x), atol=1e-6)
    spec = EmbeddingSpec.from_config(
        {"embedding": "learned", "learned": {"input_size": 16}}, detector=str(path)
    )
    embedder = Embedder(spec, device="cpu")
    assert embedder.dimension == TINY.dimension
    # The embedder resamples any size to 16 first: a 32-pixel copy embeds as its 16-pixel self.
    big = np.kron(images[:3], np.ones((2, 2), dtype=np.uint8))
    assert np.allclose(embedder(list(big)), encoder.embed(x[:3]).numpy(), atol=1e-5)


def test_load_encoder_refuses_missing_foreign_and_mismatched_files(tmp_path):
    with pytest.raises(ValueError, match="train_copy_detector"):
        load_encoder(tmp_path / "absent.safetensors")
    foreign = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a memaudit copy detector"):
        load_encoder(foreign)
    pickled = tmp_path / "weights.pt"
    pickled.write_bytes(b"x")
    with pytest.raises(ValueError, match="safetensors"):
        load_encoder(pickled)
    path = tmp_path / "d.safetensors"
    save_encoder(CopyEncoder(16, (8, 16), 16), path, TINY)
    spec = EmbeddingSpec.from_config(
        {"embedding": "learned", "learned": {"input_size": 32}}, detector=str(path)
    )
    with pytest.raises(ValueError, match="input_size"):
        Embedder(spec, device="cpu")


def test_train_detector_writes_weights_and_a_model_card(tmp_path):
    images = resampled_stack(list(smooth_images(6, 24, seed=1)), 16)
    assert images.shape == (6, 16, 16) and images.dtype == np.uint8
    spec = dataclasses.replace(TINY, steps=4, batch_size=4)
    weights = tmp_path / "model.safetensors"
    card = train_detector(images, spec, weights, {"train_images": "test"})
    assert weights.is_file() and load_encoder(weights).input_size == 16
    json.dumps(card)  # the card is JSON as written
    assert card["settings"]["steps"] == 4 and card["data"]["n_images"] == 6
    assert len(card["training"]["curve"]["loss"]) == 4
    assert card["training"]["chance_pair_accuracy"] == pytest.approx(1 / 7)
    with pytest.raises(ValueError, match="at least 2"):
        train_encoder(images[:1], spec)
    with pytest.raises(ValueError, match="input_size"):
        train_encoder(np.zeros((4, 8, 8), np.uint8), spec)


def test_detector_images_read_mixed_folders_and_name_or_count_bad_files(tmp_path):
    from PIL import Image

    from memaudit.copy_detection.detector import detector_images

    root = tmp_path / "train"
    (root / "sub").mkdir(parents=True)
    base = smooth_images(3, 32, seed=2)
    Image.fromarray(base[0]).save(root / "gray8.png")
    Image.fromarray(base[1].astype(np.uint16) * 257).save(root / "sub" / "gray16.png")
    Image.fromarray(np.repeat(base[2][..., None], 3, axis=2)).save(root / "rgb.jpg", quality=95)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cfg = {"train_images": str(root)}
    with pytest.raises(ValueError, match=r"broken\.png.*copy_detection\.unreadable: skip"):
        detector_images(cfg, None, 16)
    images, source = detector_images({**cfg, "unreadable": "skip"}, None, 16)
    assert images.shape == (3, 16, 16) and images.dtype == np.uint8
    assert source["skipped"]["unreadable"] == 1 and source["skipped"]["examples"] == ["broken.png"]
    # 8- and 16-bit PNGs of one picture resample to the same pixels; the JPEG to nearly so.
    expected = resampled_stack(list(base), 16)
    order = {"gray8.png": 0, "rgb.jpg": 2, "sub/gray16.png": 1}
    assert np.array_equal(images[0], expected[order["gray8.png"]])
    assert np.array_equal(images[2], expected[order["sub/gray16.png"]])
    assert np.abs(images[1].astype(int) - expected[2]).max() <= 6
    with pytest.raises(ValueError, match="no demo corpus"):
        detector_images({}, None, 16)


def test_blur_keeps_sharp_images_at_zero_sigma_and_preserves_the_mean():
    from memaudit.copy_detection.augment import blur

    images = torch.rand(3, 1, 10, 10)
    out = blur(images, torch.tensor([0.0, 1.0, 2.0]))
    assert torch.equal(out[0], images[0])
    assert out[2].std() < out[1].std() < images[1].std() + 1e-6
    constant = torch.full((2, 1, 6, 6), 0.3)
    assert torch.allclose(blur(constant, torch.tensor([1.5, 0.7])), constant, atol=1e-6)
