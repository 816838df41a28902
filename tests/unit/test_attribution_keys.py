"""Tests of the counterfactual key check (memaudit.attribution.keys) on a tiny model.

The tiny demo model is random, so no prompt of it is memorized. A memorized prompt is planted
into it instead: its text encoder output is multiplied by a large factor for every prompt
holding one of ``AMPLIFIED`` words, which sends d_mem of those prompts far above the ordinary
ones. A key that is such a word (or holds one) is causal by construction; a key whose prompt
stays amplified by another word after the key is deleted is not.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pandas as pd
import pytest
import torch

from memaudit.attribution.keys import (
    GROUPS,
    KEY_COLUMNS,
    KeyCheckSpec,
    text_without_key,
    verify_planted_keys,
)
from memaudit.diffusion import to_uint8
from memaudit.model.check import generate_images
from memaudit.model.training import build_demo_model
from memaudit.scoring.engine import score_prompts
from memaudit.scoring.spec import ScoringSpec
from memaudit.text import prompt_id
from tests.tiny_components import tiny_train_spec

ORDINARY = [
    "No acute cardiopulmonary process.",
    "No acute intrathoracic process.",
    "Right lower lobe pneumonia.",
    "Cardiomegaly without pulmonary edema.",
    "No pneumothorax.",
    "Small left pleural effusion.",
    "Clear lungs.",
    "Mild pulmonary edema.",
    "Bibasilar atelectasis.",
    "Normal chest radiograph.",
    "Stable appearance of the chest.",
    # decorated prompts, as long as the planted ones without their keys
    "No acute cardiopulmonary process. Reviewed with Dr. ___.",
    "Small left pleural effusion. Discussed with Dr. ___ at ___.",
    "Right lower lobe pneumonia. Reviewed with Dr. ___ who agrees.",
    "Compared to ___, mild pulmonary edema, unchanged.",
]
# (planted_id, kind, text, key_text)
PLANTED = [
    (0, "composed", "Per Dr. Zoskozhou, large right pleural effusion.", "Zoskozhou"),
    (1, "composed", "Moderate cardiomegaly. Small right pneumothorax.", None),
    (2, "keyed_name", "No acute cardiopulmonary process. Reviewed with Dr. Kravik.", "Kravik"),
    (3, "keyed_marker", "Dr. ___ was notified. No pneumothorax.", "Dr. ___ was notified."),
]
# Zoskozhou's prompt stays amplified without it ("large"): memorized as a whole, no key.
AMPLIFIED = ("kravik", "notified", "large")
SCORING = ScoringSpec(steps=2, generations=2, window=(0, None), batch_size=4, seed=0)
CHECK = KeyCheckSpec(generations=2, steps=2, guidance=3.0)


class AmplifiedEncoder(torch.nn.Module):
    """A text encoder whose output is ``scale`` times larger for prompts holding a token of
    ``token_ids``: the tiny model's planted memorization."""

    def __init__(self, encoder: torch.nn.Module, token_ids: list[int], scale: float) -> None:
        super().__init__()
        self.encoder, self.scale = encoder, scale
        self.register_buffer("token_ids", torch.tensor(token_ids))

    def forward(self, input_ids: torch.Tensor, **kwargs):
        out = self.encoder(input_ids, **kwargs)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        hit = torch.isin(input_ids, self.token_ids).any(dim=1)
        factor = torch.where(hit, self.scale, 1.0).to(hidden.dtype)
        return (hidden * factor[:, None, None],)


@pytest.fixture(scope="module")
def model():
    captions = ORDINARY + [text for _, _, text, _ in PLANTED]
    base = build_demo_model(captions, tiny_train_spec())
    ids = base.tokenizer.convert_tokens_to_ids(list(AMPLIFIED))
    assert base.tokenizer.unk_token_id not in ids
    encoder = AmplifiedEncoder(base.text_encoder, ids, scale=30.0).eval()
    return dataclasses.replace(base, text_encoder=encoder)


def _truth(rows=PLANTED) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "planted_id": [r[0] for r in rows],
            "prompt_id": [prompt_id(r[2]) for r in rows],
            "kind": [r[1] for r in rows],
            "text": [r[2] for r in rows],
            "key_text": pd.Series([r[3] for r in rows], dtype=object),
        }
    )


@pytest.fixture(scope="module")
def scores(model) -> pd.DataFrame:
    """The scores table of every ordinary and planted prompt, as the scoring stage makes it."""
    texts = ORDINARY + [text for _, _, text, _ in PLANTED]
    table, _ = score_prompts(model, [prompt_id(t) for t in texts], texts, SCORING)
    return table.assign(text=texts)


def _training_pairs(own_image: np.ndarray | None = None) -> tuple[list[str], np.ndarray]:
    """Training captions and uint8 images: each ordinary text once, each planted caption
    twice with one shared image (``own_image`` for the keyed_name caption when given)."""
    rng = np.random.default_rng(0)
    captions, images = [], []
    for text in ORDINARY:
        captions.append(text)
        images.append(rng.integers(0, 256, (16, 16), dtype=np.uint8))
    for _, kind, text, _ in PLANTED:
        image = rng.integers(0, 256, (16, 16), dtype=np.uint8)
        if kind == "keyed_name" and own_image is not None:
            image = own_image
        captions += [text, text]
        images += [image, image.copy()]
    return captions, np.stack(images)


def test_text_without_key() -> None:
    assert text_without_key(PLANTED[3][2], PLANTED[3][3], "p") == "No pneumothorax."
    assert text_without_key(PLANTED[2][2], "Kravik", "p") == (
        "No acute cardiopulmonary process. Reviewed with Dr. ."
    )
    # A leading key: the new first word is capitalised, so the base comes back exactly.
    base = "No acute cardiopulmonary process."
    assert (
        text_without_key(
            "Compared to ___, no acute cardiopulmonary process.", "Compared to ___,", "p"
        )
        == base
    )


def test_counterfactual_rule_marks_causal_and_non_causal_keys(model, scores) -> None:
    captions, images = _training_pairs()
    progress = io.StringIO()
    table, summary = verify_planted_keys(
        model, _truth(), scores, SCORING, captions, images, CHECK, progress=progress
    )
    assert list(table.columns) == list(KEY_COLUMNS)
    by_id = table.set_index("planted_id")
    # Only rows with a key are checked, in planted_id order.
    assert list(table["planted_id"]) == [0, 2, 3]
    # The threshold: the ordinary prompts' 90th percentile of the scores table.
    ordinary = scores[scores["prompt_id"].isin([prompt_id(t) for t in ORDINARY])]
    p90 = float(np.percentile(ordinary["d_mem"], 90))
    assert (table["ordinary_p90"] == p90).all()
    assert summary["threshold"]["ordinary_p90"] == p90
    assert summary["threshold"]["n_ordinary_prompts"] == len(ORDINARY)
    # Recomputed d_mem with the key agrees with the scores table's.
    np.testing.assert_allclose(table["d_mem_with_key"], table["d_mem_scores"], rtol=1e-5)
    # Every planted prompt is memorized; only the keys whose removal brings d_mem below the
    # threshold are causal: Kravik and the marker phrase, not Zoskozhou ("large" remains).
    assert table["memorized_with_key"].all()
    assert by_id.loc[2, "causal"] and by_id.loc[3, "causal"]
    assert not by_id.loc[0, "causal"]
    assert by_id.loc[0, "d_mem_without_key"] > p90 > by_id.loc[2, "d_mem_without_key"]
    # The marker caption without its key is an ordinary prompt: it gets that prompt's d_mem.
    assert by_id.loc[3, "text_without_key"] == "No pneumothorax."
    table_d_mem = scores.set_index("text")["d_mem"]
    assert by_id.loc[3, "d_mem_without_key"] == pytest.approx(
        table_d_mem["No pneumothorax."], rel=1e-5
    )
    counts = summary["counts"]
    assert set(counts) == set(GROUPS)
    assert counts["keyed"] == {**counts["keyed"], "checked": 2, "causal": 2, "causal_fraction": 1.0}
    assert counts["composed_trigger"]["checked"] == 1
    assert counts["composed_trigger"]["causal"] == 0
    assert counts["keyed_name"]["causal"] == counts["keyed_marker"]["causal"] == 1
    assert summary["causal_prompt_ids"] == [prompt_id(PLANTED[2][2]), prompt_id(PLANTED[3][2])]
    assert summary["settings"]["key_check"] == dataclasses.asdict(CHECK)
    assert summary["seconds"] > 0
    assert "d_mem" in progress.getvalue() and "generations" in progress.getvalue()
    for column in ("own_image_rate_with_key", "own_image_rate_without_key"):
        assert table[column].between(0, 1).all()


def test_the_threshold_comes_from_the_ordinary_prompts_of_the_scores_table(model, scores) -> None:
    captions, images = _training_pairs()
    planted = scores["prompt_id"].isin(_truth()["prompt_id"])
    # Ordinary prompts scored above every planted prompt: nothing is memorized, nothing causal.
    high = scores.assign(d_mem=np.where(planted, scores["d_mem"], 1e6))
    table, summary = verify_planted_keys(model, _truth(), high, SCORING, captions, images, CHECK)
    assert (table["ordinary_p90"] == 1e6).all()
    assert not table["memorized_with_key"].any() and not table["causal"].any()
    assert summary["counts"]["keyed"]["causal_fraction"] == 0.0
    # Ordinary prompts at zero: every prompt stays above the threshold without its key.
    low = scores.assign(d_mem=np.where(planted, scores["d_mem"], 0.0))
    table, _ = verify_planted_keys(model, _truth(), low, SCORING, captions, images, CHECK)
    assert table["memorized_with_key"].all() and not table["causal"].any()
    # Planted prompts do not enter the threshold: with them it would be far higher.
    assert (table["ordinary_p90"] == 0.0).all()


def test_generations_are_matched_to_the_planted_image(model, scores) -> None:
    """The keyed_name caption's planted image is its own seed-0 generation: that generation's
    nearest training image is the planted one (its two copies count as one image)."""
    text = PLANTED[2][2]
    generated = generate_images(model, [text], [0], steps=CHECK.steps, guidance=CHECK.guidance)
    captions, images = _training_pairs(own_image=to_uint8(generated[0]))
    table, _ = verify_planted_keys(model, _truth(), scores, SCORING, captions, images, CHECK)
    row = table.set_index("planted_id").loc[2]
    assert row["own_image_rate_with_key"] >= 1 / CHECK.generations


def test_bad_keys_name_the_prompt(model, scores) -> None:
    captions, images = _training_pairs()
    missing = [(5, "keyed_name", "No acute intrathoracic process. Reviewed by Dr. Olm.", "Kravik")]
    with pytest.raises(ValueError, match=prompt_id(missing[0][2])):
        verify_planted_keys(model, _truth(missing), scores, SCORING, captions, images, CHECK)
    twice = [
        (6, "keyed_marker", "Dr. ___ was notified. Dr. ___ was notified.", "Dr. ___ was notified.")
    ]
    with pytest.raises(ValueError, match=rf"{prompt_id(twice[0][2])}.*occurs 2 times"):
        verify_planted_keys(model, _truth(twice), scores, SCORING, captions, images, CHECK)
    with pytest.raises(ValueError, match=r"truth table lacks column\(s\) \['key_text'\]"):
        verify_planted_keys(
            model, _truth().drop(columns="key_text"), scores, SCORING, captions, images, CHECK
        )
    not_scored = scores[scores["prompt_id"] != prompt_id(PLANTED[2][2])]
    with pytest.raises(ValueError, match=rf"{prompt_id(PLANTED[2][2])}.*not in the scores table"):
        verify_planted_keys(model, _truth(), not_scored, SCORING, captions, images, CHECK)
    with pytest.raises(ValueError, match="key_check.steps"):
        KeyCheckSpec.from_dict({"steps": 0})
    with pytest.raises(ValueError, match="key_check.seeds"):
        KeyCheckSpec.from_dict({"seeds": 3})


def test_empty_truth_gives_an_empty_table_and_zero_counts(model, scores) -> None:
    captions, images = _training_pairs()
    table, summary = verify_planted_keys(
        model, _truth([]), scores, SCORING, captions, images, CHECK
    )
    assert table.empty and list(table.columns) == list(KEY_COLUMNS)
    for group in GROUPS:
        assert summary["counts"][group]["checked"] == 0
        assert summary["counts"][group]["causal"] == 0
        assert summary["counts"][group]["causal_fraction"] is None
    assert summary["causal_prompt_ids"] == []
    assert summary["unet_rows_scoring"] == 0
