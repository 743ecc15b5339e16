"""Retrieval metrics: brute force with planted ties, blocked == full, both directions, errors."""

import numpy as np
import pytest

from trainer.retrieval.metrics import both_directions, metrics_from_ranks, retrieval_metrics, retrieval_ranks


def _integer_embeddings(rng, num, dim):
    # Small integers: every dot product is exact in float32 whatever the summation
    # order, so exact ties stay exact and any block size must give the same ranks.
    return rng.integers(-2, 3, size=(num, dim)).astype("float32")


def _planted(rng, num=60, dim=4):
    queries = _integer_embeddings(rng, num, dim)
    items = _integer_embeddings(rng, num, dim)
    items[5] = items[3]  # duplicate items: queries 3 and 5 tie with each other's item
    items[7] = items[8] = items[9]  # a triple
    queries[10] = 0.0  # a zero query ties with every item
    items[11] = queries[11]  # positives with the best possible score for some rows
    return queries, items


def _brute_force_ranks(queries, items):
    """Position of item i in row i sorted by score, the query's own item last among equals."""
    scores = queries.astype(np.int64) @ items.astype(np.int64).T
    ranks = []
    for i, row in enumerate(scores.tolist()):
        order = sorted(range(len(row)), key=lambda j, row=row, i=i: (-row[j], j == i))
        ranks.append(order.index(i) + 1)
    return np.array(ranks)


def test_ranks_and_metrics_match_brute_force_with_ties():
    queries, items = _planted(np.random.default_rng(0))
    expected = _brute_force_ranks(queries, items)
    ranks = retrieval_ranks(queries, items, block_size=7)
    np.testing.assert_array_equal(ranks, expected)
    assert ranks[10] == 60  # ties count against the query
    metrics = retrieval_metrics(queries, items, block_size=7)
    for k in (1, 5, 10):
        assert metrics[f"r{k}"] == pytest.approx(np.mean(expected <= k))
    assert metrics["median_rank"] == np.median(expected)
    assert metrics["mean_rank"] == pytest.approx(expected.mean())
    assert metrics["num_queries"] == 60


def test_collapsed_embeddings_score_zero_not_perfect():
    ones = np.ones((20, 3), "float32")
    metrics = retrieval_metrics(ones, ones)
    assert metrics["r1"] == 0.0 and metrics["r10"] == 0.0 and metrics["median_rank"] == 20.0


@pytest.mark.parametrize("block_size", [1, 3, 64, 256, 257, 10_000])
def test_blocked_ranks_equal_full_matrix_ranks(block_size):
    rng = np.random.default_rng(1)
    queries = _integer_embeddings(rng, 257, 16)
    items = queries + _integer_embeddings(rng, 257, 16)
    items[100] = items[200]
    full_scores = queries @ items.T
    own = np.diag(full_scores)[:, None]
    full = 1 + np.sum(full_scores > own, axis=1) + np.sum(full_scores == own, axis=1) - 1
    np.testing.assert_array_equal(retrieval_ranks(queries, items, block_size=block_size), full)


def test_metrics_from_known_ranks():
    metrics = metrics_from_ranks([1, 2, 6, 11, 1])
    assert metrics == {
        "r1": 0.4,
        "r5": 0.6,
        "r10": 0.8,
        "median_rank": 2.0,
        "mean_rank": 4.2,
        "num_queries": 5,
    }


def test_both_directions_transposes():
    rng = np.random.default_rng(2)
    audio = _integer_embeddings(rng, 30, 5)
    video = _integer_embeddings(rng, 30, 5)
    result = both_directions(audio, video, block_size=8)
    assert result["a2v"] == retrieval_metrics(audio, video)
    assert result["v2a"] == metrics_from_ranks(_brute_force_ranks(video, audio))


@pytest.mark.parametrize(
    "queries, items, block_size, message",
    [
        (np.ones((3, 2)), np.ones((4, 2)), 8, r"same \[N, D\] shape, got \(3, 2\) and \(4, 2\)"),
        (np.ones(3), np.ones(3), 8, r"query_emb must be \[N, D\] embeddings, got shape \(3,\)"),
        (np.zeros((0, 2)), np.zeros((0, 2)), 8, "at least one query/item pair"),
        (np.array([[np.nan, 1.0]]), np.ones((1, 2)), 8, "query_emb holds 1 NaN/Inf"),
        (np.ones((2, 2)), np.ones((2, 2)), 0, "block_size must be a positive integer, got 0"),
    ],
)
def test_bad_inputs_are_rejected(queries, items, block_size, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(queries, items, block_size=block_size)
