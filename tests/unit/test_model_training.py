"""Demo model (memaudit.model): training determinism, layout round-trip, learning, the
memorization check and its saved generations, and the figures drawn from saved files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from memaudit.diffusion import sample_images, to_uint8
from memaudit.model.artifacts import Generations, load_losses, read_generations, write_generations
from memaudit.model.check import checked_prompts, first_rows, generate_images
from memaudit.model.figures import grid_rows, plot_generation_grid, plot_training_curve
from memaudit.model.loading import load_model
from memaudit.model.spec import TrainSpec
from memaudit.model.training import (
    demo_training_pairs,
    fit_demo_model,
    save_demo_model,
    train_demo_model,
    train_tokenizer,
)
from tests.tiny_components import TINY_CAPTIONS, tiny_train_spec

WEIGHTS = ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _images(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


def _patterns(size: int = 16) -> np.ndarray:
    """Four clearly different images: bright square, stripes, gradient, dark ring."""
    y, x = np.mgrid[:size, :size]
    square = ((abs(y - 8) < 4) & (abs(x - 8) < 4)) * 255
    stripes = ((x // 2) % 2) * 255
    gradient = y * 255 // (size - 1)
    ring = (abs(np.hypot(y - 7.5, x - 7.5) - 5) > 1.5) * 255
    return np.stack([square, stripes, gradient, ring]).astype(np.uint8)


def test_spec_from_dict_names_unknown_keys_and_bad_values() -> None:
    spec = TrainSpec.from_dict({"steps": 10, "unet_block_out_channels": [8, 16]})
    assert spec.steps == 10 and spec.unet_block_out_channels == (8, 16)
    with pytest.raises(ValueError, match=r"\['lr', 'stepz'\]"):
        TrainSpec.from_dict({"stepz": 10, "lr": 1e-3})
    with pytest.raises(ValueError, match="text_heads"):
        TrainSpec.from_dict({"text_hidden_size": 30, "text_heads": 4})


def test_tokenizer_keeps_the_marker_as_one_lower_case_token() -> None:
    tok = train_tokenizer(TINY_CAPTIONS, max_length=12)
    ids = tok(["Findings discussed with DR. ___ on ____."])["input_ids"][0]
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens == [
        "[CLS]", "findings", "discussed", "with", "dr", ".", "___", "on", "[UNK]", ".", "[SEP]",
    ]  # fmt: skip
    assert tok.convert_ids_to_tokens(tok([""])["input_ids"][0]) == ["[CLS]", "[SEP]"]
    assert tok.convert_ids_to_tokens(list(range(5))) == [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    ]  # fmt: skip


def test_training_is_deterministic_and_seeded(tmp_path: Path) -> None:
    images = _images(len(TINY_CAPTIONS))
    cards = [
        train_demo_model(
            TINY_CAPTIONS, images, tiny_train_spec(), tmp_path / name, "h", io.StringIO()
        )
        for name in ("a", "b")
    ]
    train_demo_model(
        TINY_CAPTIONS, images, tiny_train_spec(seed=1), tmp_path / "c", "h", io.StringIO()
    )
    for rel in WEIGHTS:
        same = (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
        assert same, f"{rel} differs between two identical runs"
        a, c = load_file(str(tmp_path / "a" / rel)), load_file(str(tmp_path / "c" / rel))
        assert any(not torch.equal(a[k], c[k]) for k in a), f"{rel} ignores the seed"
    assert cards[0]["final_loss"] == cards[1]["final_loss"]
    assert np.array_equal(load_losses(tmp_path / "a"), load_losses(tmp_path / "b"))


def test_model_card_and_layout(tmp_path: Path) -> None:
    log = io.StringIO()
    card = train_demo_model(
        TINY_CAPTIONS, _images(len(TINY_CAPTIONS)), tiny_train_spec(steps=5), tmp_path, "abc", log
    )
    assert json.loads((tmp_path / "model_card.json").read_text()) == card
    assert card["corpus_sha256"] == "abc" and card["steps"] == 5 and card["n_pairs"] == 6
    assert card["spec"]["unet_block_out_channels"] == [8, 16]
    assert card["parameters"]["unet"] > 0 and card["parameters"]["text_encoder"] > 0
    assert len(load_losses(tmp_path)) == 5
    assert "train demo model" in log.getvalue() and "loss=" in log.getvalue()
    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert set(WEIGHTS) | {"tokenizer/tokenizer.json", "scheduler/scheduler_config.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth"))]


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    spec = tiny_train_spec()
    with pytest.raises(ValueError, match="6 captions but 5 images"):
        train_demo_model(TINY_CAPTIONS, _images(5), spec, tmp_path)
    with pytest.raises(ValueError, match="uint8"):
        train_demo_model(TINY_CAPTIONS, _images(6).astype(float), spec, tmp_path)
    with pytest.raises(ValueError, match=r"\[N, 16, 16\]"):
        train_demo_model(TINY_CAPTIONS, _images(6, size=32), spec, tmp_path)


def test_saved_folder_round_trips_through_load_model(tmp_path: Path) -> None:
    spec = tiny_train_spec(steps=5)
    model, _, _ = fit_demo_model(TINY_CAPTIONS, _images(6), spec, io.StringIO())
    save_demo_model(model, tmp_path)
    loaded = load_model({"kind": "demo", "path": str(tmp_path)}, device="cpu")
    prompts = [TINY_CAPTIONS[1], "", "an unseen caption ___"]
    assert torch.equal(model.tokenize(prompts)["input_ids"], loaded.tokenize(prompts)["input_ids"])
    torch.testing.assert_close(loaded.encode(prompts), model.encode(prompts), rtol=0, atol=0)
    x = torch.randn(3, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model.unet(x, 999, encoder_hidden_states=model.encode(prompts)).sample
        got = loaded.unet(x, 999, encoder_hidden_states=loaded.encode(prompts)).sample
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    cfg = loaded.scheduler.config
    assert (cfg.timestep_spacing, cfg.beta_schedule, cfg.clip_sample) == (
        "trailing",
        "linear",
        True,
    )


def test_loss_decreases_and_figures_are_written(tmp_path: Path) -> None:
    """Four captions, each with one fixed image: the noise-prediction loss falls.

    (Memorization itself is measured outside the suite on the demo corpus: nets this small
    and this few steps do not memorize reliably enough for an honest unit assertion.)
    """
    captions = ["square", "stripes ___", "gradient", "ring"]
    images = _patterns()
    spec = tiny_train_spec(steps=120, batch_size=8, learning_rate=3e-3)
    model, losses, _ = fit_demo_model(captions, images, spec, io.StringIO())
    assert len(losses) == 120
    assert np.mean(losses[-30:]) < 0.6 * np.mean(losses[:30])
    generated = generate_images(model, captions, seeds=[0, 1], steps=5, guidance=4.0)
    assert generated.shape == (8, 16, 16) and generated.min() >= 0 and generated.max() <= 1
    plot_training_curve(losses, tmp_path / "curve.png")
    generations = Generations(
        texts=captions[:2],
        kinds=["planted", "ordinary"],
        images=to_uint8(generated[:4]).reshape(2, 2, 16, 16),
        training=images[:2],
        seeds=(0, 1),
        steps=5,
        guidance=4.0,
    )
    plot_generation_grid(generations, tmp_path / "grid.png", n_seeds=1)
    for name in ("curve.png", "curve.pdf", "grid.png", "grid.pdf"):
        assert (tmp_path / name).stat().st_size > 1000


def test_generation_depends_only_on_prompt_and_seed() -> None:
    spec = tiny_train_spec(steps=1)
    model, _, _ = fit_demo_model(TINY_CAPTIONS, _images(6), spec, io.StringIO())
    both = generate_images(model, TINY_CAPTIONS[:2], seeds=[3, 4], steps=4, guidance=7.5)
    alone = generate_images(model, TINY_CAPTIONS[1:2], seeds=[4], steps=4, guidance=7.5)
    # float32: batch composition changes only kernel rounding (amplified by guidance 7.5)
    np.testing.assert_allclose(both[3], alone[0], atol=1e-3)
    # float64: the same image exactly, so nothing but the prompt and seed enters
    model.unet.double()
    model.text_encoder.double()
    model.dtype = torch.float64
    both = generate_images(model, TINY_CAPTIONS[:2], seeds=[3, 4], steps=4, guidance=7.5)
    alone = generate_images(model, TINY_CAPTIONS[1:2], seeds=[4], steps=4, guidance=7.5)
    np.testing.assert_allclose(both[3], alone[0], rtol=0, atol=1e-12)
    assert not np.allclose(both[2], both[3])  # different seeds, different images


def test_training_pairs_follow_the_report_map_and_image_index() -> None:
    import pandas as pd

    images = _images(4)
    studies = pd.DataFrame({"study_id": [11, 12, 13, 14], "image_index": [3, 2, 1, 0]})
    prompts = pd.DataFrame({"prompt_id": ["a", "b"], "text": ["caption a", "caption b"]})
    # study 13's report was skipped by the prompts stage: it has no caption, so no pair
    report_map = pd.DataFrame(
        {"study_id": pd.array([11, 12, 14], dtype="Int64"), "prompt_id": ["a", "b", "a"]}
    )
    captions, pairs = demo_training_pairs(studies, report_map, prompts, images)
    assert captions == ["caption a", "caption b", "caption a"]
    np.testing.assert_array_equal(pairs, images[[3, 2, 0]])
    with pytest.raises(ValueError, match="not in prompts"):
        demo_training_pairs(studies, report_map.assign(prompt_id=["a", "zz", "a"]), prompts, images)
    with pytest.raises(ValueError, match="lacks column"):
        demo_training_pairs(studies.drop(columns="image_index"), report_map, prompts, images)


def test_checked_prompts_are_planted_then_frequent_ordinary() -> None:
    import pandas as pd

    captions = ["p1", "o1", "o2", "o2", "p0", "o2", "o1", "o3"]
    truth = pd.DataFrame({"planted_id": [1, 0, 2], "text": ["p1", "p0", "p2"]})
    planted, ordinary = checked_prompts(truth, captions, n_ordinary=2)
    assert planted == ["p0", "p1"]  # planted_id order; p2 has no training pair
    assert ordinary == ["o2", "o1"]  # most frequent first
    assert checked_prompts(truth, captions, n_ordinary=5)[1] == ["o2", "o1", "o3"]
    # each prompt's training image is its first pair's
    np.testing.assert_array_equal(first_rows(captions, planted + ordinary), [4, 0, 2, 1])


def test_memorization_check_scores_copies_and_spread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted captions whose generations copy their one image score 1; an ordinary caption
    whose seeds land on different training images scores low seed agreement."""
    import pandas as pd

    from memaudit.model import check

    patterns = _patterns()  # 4 distinct images
    rng = np.random.default_rng(0)
    noisy = [np.clip(p + rng.integers(0, 20, p.shape), 0, 255).astype(np.uint8) for p in patterns]
    # planted "P" x3 with image 0; ordinary "O" with images 1, 2, 3 (three reports)
    captions = ["P", "P", "P", "O", "O", "O"]
    images = np.stack([patterns[0]] * 3 + noisy[1:])
    truth = pd.DataFrame({"planted_id": [0], "text": ["P"]})

    def fake_generate(model, prompts, seeds, steps, guidance):
        out = []
        for prompt in prompts:
            for k, _ in enumerate(seeds):
                source = patterns[0] if prompt == "P" else patterns[1 + k % 3]
                out.append(source.astype(np.float32) / 255.0)
        return np.stack(out)

    monkeypatch.setattr(check, "generate_images", fake_generate)
    summary, table, generations = check.check_memorization(
        None, truth, captions, images, seeds=(0, 1, 2), n_ordinary=5, steps=7, guidance=2.0
    )
    assert summary["n_planted"] == 1 and summary["n_ordinary"] == 1
    assert summary["n_training_images"] == 4
    assert summary["planted_own_nearest_rate"] == 1.0
    assert summary["planted_reproduced_fraction"] == 1.0
    assert summary["planted_seed_agreement"] == 1.0
    assert summary["ordinary_seed_agreement"] == 0.0
    assert list(table["kind"]) == ["planted", "ordinary"]
    # the generations it measured come back, rows in the table's order, for the grid figure
    assert generations.texts == ["P", "O"] and generations.kinds == ["planted", "ordinary"]
    assert (generations.seeds, generations.steps, generations.guidance) == ((0, 1, 2), 7, 2.0)
    assert generations.images.shape == (2, 3, 16, 16) and generations.images.dtype == np.uint8
    np.testing.assert_array_equal(generations.images[0, 2], patterns[0])
    np.testing.assert_array_equal(generations.images[1, 1], patterns[2])
    np.testing.assert_array_equal(generations.training, images[[0, 3]])  # first pair's image


def test_check_generates_with_the_shared_sampler() -> None:
    """generate_images is the shared guided DDIM sampler, x_T seeded by the seed itself."""
    spec = tiny_train_spec(steps=1)
    model, _, _ = fit_demo_model(TINY_CAPTIONS, _images(6), spec, io.StringIO())
    prompts, seeds = TINY_CAPTIONS[:2], [3, 4]
    got = generate_images(model, prompts, seeds, steps=3, guidance=5.0)
    noise = torch.stack(
        [
            torch.randn(model.latent_shape, generator=torch.Generator().manual_seed(s))
            for _ in prompts
            for s in seeds
        ]
    )
    cond = model.encode([p for p in prompts for _ in seeds])
    want = sample_images(model, cond, noise, model.encode([""]), 3, 5.0).numpy()
    # one batch of the same four rows on both sides: the same computation, bit for bit
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(generate_images(model, prompts, seeds, 3, 5.0), got)


def test_generations_round_trip_and_grid_rows(tmp_path: Path) -> None:
    images = np.random.default_rng(1).integers(0, 256, (5, 4, 16, 16), dtype=np.uint8)
    generations = Generations(
        texts=["p0", "p1", "o0", "o1", "o2"],
        kinds=["planted", "planted", "ordinary", "ordinary", "ordinary"],
        images=images,
        training=_images(5),
        seeds=(0, 1, 2, 3),
        steps=20,
        guidance=7.5,
    )
    write_generations(generations, tmp_path / "g.npz", tmp_path / "g.parquet")
    back = read_generations(tmp_path / "g.npz", tmp_path / "g.parquet")
    assert (back.texts, back.kinds) == (generations.texts, generations.kinds)
    assert (back.seeds, back.steps, back.guidance) == ((0, 1, 2, 3), 20, 7.5)
    np.testing.assert_array_equal(back.images, images)
    np.testing.assert_array_equal(back.training, generations.training)
    # the grid: the first planted prompts, then the first (most frequent) ordinary ones
    assert grid_rows(back, n_planted=1, n_ordinary=2) == [0, 2, 3]
    assert grid_rows(back) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="number of prompts"):
        Generations(["a"], ["planted", "ordinary"], images[:1], _images(1), (0, 1, 2, 3), 1, 1.0)
    with pytest.raises(ValueError, match="seeds"):
        Generations(["a"], ["planted"], images[:1], _images(1), (0, 1), 1, 1.0)
