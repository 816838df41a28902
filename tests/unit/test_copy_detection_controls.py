"""Tests of the ordinary control prompts that give copy detection its false-copy rate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from memaudit.copy_detection.controls import control_spec, generate_controls, select_controls
from memaudit.copy_detection.validity import control_generations
from memaudit.mitigation.generation import generate_mitigations
from memaudit.mitigation.spec import MitigationSpec
from memaudit.model.training import build_demo_model
from memaudit.scoring.spec import ScoringSpec
from memaudit.text import prompt_id
from tests.tiny_components import tiny_train_spec

TEXTS = [f"Finding number {i} of the lungs." for i in range(30)]


def ranked_table() -> pd.DataFrame:
    ids = [prompt_id(t) for t in TEXTS]
    return pd.DataFrame(
        {
            "prompt_id": ids,
            "text": TEXTS,
            "d_mem": np.linspace(2.0, 0.1, len(TEXTS)),
            "rank": np.arange(1, len(TEXTS) + 1),
            "memorized": [i < 3 for i in range(len(TEXTS))],
        }
    )


def test_controls_are_ordinary_drawn_by_hash_and_independent_of_row_order():
    ranked = ranked_table()
    truth = pd.DataFrame({"prompt_id": ranked["prompt_id"].iloc[3:8]})
    controls, counts = select_controls(ranked, truth, 6, seed=0)
    excluded = set(ranked["prompt_id"].iloc[:8])
    assert len(controls) == 6 and not excluded & set(controls["prompt_id"])
    assert controls["prompt_id"].tolist() == sorted(controls["prompt_id"])
    assert controls["row"].tolist() == list(range(6))
    assert counts == {
        "requested": 6,
        "selected": 6,
        "ordinary_available": 22,
        "excluded_memorized": 3,
        "excluded_planted": 5,
    }
    shuffled, _ = select_controls(ranked.sample(frac=1.0, random_state=3), truth, 6, seed=0)
    pd.testing.assert_frame_equal(shuffled, controls)
    other, _ = select_controls(ranked, truth, 6, seed=1)
    assert set(other["prompt_id"]) != set(controls["prompt_id"])  # the seed draws the sample
    # Asking for more than there are takes them all; 0 takes none; the text comes along.
    every, _ = select_controls(ranked, None, 100, seed=0)
    assert (
        len(every) == 27
        and every.set_index("prompt_id").loc[controls["prompt_id"], "text"].tolist()
        == controls["text"].tolist()
    )
    assert select_controls(ranked, truth, 0, seed=0)[0].empty


@pytest.mark.parametrize("n", [-1, 2.5, True])
def test_a_bad_control_count_names_the_key(n):
    with pytest.raises(ValueError, match="copy_detection.controls must be an integer >= 0"):
        select_controls(ranked_table(), None, n, seed=0)


def test_a_ranked_table_without_the_memorized_flag_is_named():
    with pytest.raises(ValueError, match=r"ranked prompts lacks column\(s\) \['memorized'\]"):
        select_controls(ranked_table().drop(columns="memorized"), None, 3, seed=0)


def test_controls_are_generated_exactly_as_the_original_strategy():
    torch.manual_seed(0)
    model = build_demo_model(TEXTS, tiny_train_spec())
    spec = MitigationSpec(strategies=("original", "rwa"), n_seeds=3, steps=3, seed=4, batch_size=4)
    controls, _ = select_controls(ranked_table(), None, 2, seed=0)
    images, stats = generate_controls(model, controls, control_spec(vars(spec)))
    assert images.shape == (2, 3, 16, 16) and images.dtype == np.uint8
    assert stats["n_prompts"] == 2 and stats["images"] == 6
    scoring = ScoringSpec(steps=2, generations=1)
    index, mitigated, _ = generate_mitigations(model, controls, spec, scoring, ["___"], ["w"])
    original = index[index["strategy"] == "original"].set_index("prompt_id")
    for row in controls.itertuples(index=False):
        expected = mitigated[int(original.loc[row.prompt_id, "row"])]
        difference = np.abs(images[row.row].astype(int) - expected.astype(int))
        assert difference.max() <= 1  # other batch shapes round a pixel at most one level apart
    assert not np.array_equal(images[0], images[1])  # the prompt matters


def test_control_generations_are_unplanted_original_rows_one_per_seed():
    images = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    prompts = pd.DataFrame({"prompt_id": ["b", "a"], "text": ["x", "y"], "row": [1, 0]})
    generations = control_generations(images, prompts)
    assert generations.rows["prompt_id"].tolist() == ["a"] * 3 + ["b"] * 3
    assert generations.rows["generation"].tolist() == [0, 1, 2] * 2
    assert not generations.rows["planted"].any()
    assert set(generations.rows["source"]) == {"mitigation"}
    assert np.array_equal(generations.images[3], images[1, 0])
    with pytest.raises(ValueError, match=r"2 control prompts but control images of shape"):
        control_generations(images[:1], prompts)
