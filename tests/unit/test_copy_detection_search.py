"""Tests of the exact blocked nearest-neighbour search of copy detection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memaudit.copy_detection import search
from memaudit.copy_detection.search import nearest_neighbours


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    rows = rng.normal(size=(n, d))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def brute_force(queries: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sims = queries.astype(np.float64) @ reference.astype(np.float64).T
    return sims.max(axis=1), sims.argmax(axis=1)


@pytest.mark.parametrize("block", [1, 7, 40, 41, 1000, None])
def test_blocked_search_equals_brute_force(block: int | None) -> None:
    rng = np.random.default_rng(0)
    reference, queries = unit_rows(rng, 41, 16), unit_rows(rng, 23, 16)
    sims, rows = nearest_neighbours(queries, reference, "cpu", block)
    best, where = brute_force(queries, reference)
    assert sims.dtype == np.float32 and rows.dtype == np.int64
    np.testing.assert_allclose(sims, best, rtol=0, atol=1e-6)
    # the data has no near ties, so every row must be the brute-force one
    top2 = np.sort(queries.astype(np.float64) @ reference.T.astype(np.float64), axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-5
    np.testing.assert_array_equal(rows, where)


def test_query_chunks_and_blocks_change_no_result(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    reference, queries = unit_rows(rng, 60, 32), unit_rows(rng, 20, 32)
    sims, rows = nearest_neighbours(queries, reference)  # one block, one query chunk
    monkeypatch.setattr(search, "_QUERY_CHUNK", 8)  # queries in 3 chunks, the last one short
    for block in (1, 7, 59, 61):
        other_sims, other_rows = nearest_neighbours(queries, reference, block=block)
        np.testing.assert_allclose(other_sims, sims, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(other_rows, rows)


def test_ties_go_to_the_lower_reference_row_within_and_across_blocks() -> None:
    rng = np.random.default_rng(2)
    base = unit_rows(rng, 3, 8)
    # reference rows 2, 5 and 9 are the same vector (query 0's match); rows 3 and 4 query 1's
    reference = unit_rows(rng, 12, 8) * 0.1
    reference[[2, 5, 9]] = base[0]
    reference[[3, 4]] = base[1]
    queries = base[[0, 1, 2]]
    for block in (1, 2, 3, 4, 5, 12, 100):
        sims, rows = nearest_neighbours(queries, reference, block=block)
        assert rows[0] == 2 and rows[1] == 3, block
        assert sims[0] == pytest.approx(1.0, abs=1e-6)
    # zero rows (constant images) tie at similarity 0 everywhere: the lowest row wins
    sims, rows = nearest_neighbours(np.zeros((2, 8), np.float32), reference, block=5)
    np.testing.assert_array_equal(rows, [0, 0])
    np.testing.assert_array_equal(sims, [0.0, 0.0])


def test_memmapped_and_float64_references_give_the_same_answer(tmp_path) -> None:
    rng = np.random.default_rng(3)
    reference, queries = unit_rows(rng, 50, 8), unit_rows(rng, 10, 8)
    np.save(tmp_path / "ref.npy", reference)
    mapped = np.load(tmp_path / "ref.npy", mmap_mode="r")
    expected = nearest_neighbours(queries, reference, block=9)
    for other in (mapped, reference.astype(np.float64), np.asfortranarray(reference)):
        sims, rows = nearest_neighbours(queries.astype(np.float64), other, block=9)
        np.testing.assert_array_equal(rows, expected[1])
        np.testing.assert_allclose(sims, expected[0], rtol=0, atol=1e-6)


def test_matmul_precision_is_restored_and_fp32_is_used() -> None:
    rng = np.random.default_rng(4)
    reference, queries = unit_rows(rng, 20, 8), unit_rows(rng, 5, 8)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        sims, _ = nearest_neighbours(queries, reference)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)
    np.testing.assert_allclose(sims, brute_force(queries, reference)[0], rtol=0, atol=1e-6)


def test_empty_queries_give_empty_results() -> None:
    reference = unit_rows(np.random.default_rng(5), 4, 6)
    sims, rows = nearest_neighbours(np.zeros((0, 6), np.float32), reference)
    assert sims.shape == (0,) and rows.shape == (0,)
    assert sims.dtype == np.float32 and rows.dtype == np.int64


@pytest.mark.parametrize(
    ("queries", "reference", "block", "message"),
    [
        (np.zeros((2, 6)), np.zeros((3, 5)), None, "do not match"),
        (np.zeros(6), np.zeros((3, 6)), None, r"queries embeddings must be \[rows"),
        (np.zeros((2, 6)), np.zeros(6), None, "do not match"),
        (np.zeros((2, 0)), np.zeros((3, 0)), None, "dimension > 0"),
        (np.zeros((2, 6)), np.zeros((0, 6)), None, "reference .* is empty"),
        (np.zeros((2, 6)), np.zeros((3, 6)), 0, "copy_detection.search_block"),
        (np.zeros((2, 6)), np.zeros((3, 6)), 2.5, "copy_detection.search_block"),
        (np.zeros((2, 6)), np.zeros((3, 6)), True, "copy_detection.search_block"),
        (np.full((2, 6), np.nan), np.zeros((3, 6)), None, "queries embedding row 0 is not"),
        (np.zeros((2, 6)), np.eye(6)[[0, 1, 2]] * [[1], [1], [3]], 2, "reference .* row 2 has"),
    ],
)
def test_bad_inputs_are_clear_errors(queries, reference, block, message) -> None:
    with pytest.raises(ValueError, match=message):
        nearest_neighbours(queries, reference, block=block)
