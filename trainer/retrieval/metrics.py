"""Retrieval metrics of paired embeddings: ranks, R@1/5/10, median and mean rank, both directions."""

from __future__ import annotations

import numpy as np

RECALL_AT = (1, 5, 10)


def _as_embeddings(name: str, value) -> np.ndarray:
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must be [N, D] embeddings, got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        # A NaN score compares false with everything and would rank first.
        raise ValueError(f"{name} holds {int(np.sum(~np.isfinite(array)))} NaN/Inf values.")
    return array


def retrieval_ranks(query_emb, item_emb, block_size: int = 4096) -> np.ndarray:
    """1-based rank of each query's own item (query i's correct item is item i).

    Scores are dot products. Ties count against the query (pessimistic rule):
    rank_i = 1 + #{j : s_ij > s_ii} + #{j != i : s_ij == s_ii}, so a collapsed model
    whose embeddings are all equal ranks every item last instead of first. (AVLnet's
    reference code counts ties in the query's favor; the two rules differ only on
    exactly equal scores.)

    Queries are processed `block_size` rows at a time: each block computes its
    [block, N] float32 scores with one matrix product and compares every row with
    its own diagonal score taken from that same product, so the full N x N matrix
    never exists. Peak extra memory is about block_size * N * 5 bytes (scores plus
    one boolean comparison), e.g. 2 GB for 4096 x 100,000; lower `block_size` to
    bound it further. The ranks do not depend on `block_size` except, for float
    embeddings, where two scores agree to within float32 rounding (the matrix
    product's summation order may differ between block shapes); scores that are
    exactly representable, such as those of repeated vectors, rank identically.

    Args:
      query_emb: [N, D] queries.
      item_emb: [N, D] items.
      block_size: queries per block (positive).

    Returns:
      [N] int64 ranks in [1, N].

    Raises:
      ValueError: shapes that differ or are not [N, D], an empty set, NaN/Inf
        values, or a non-positive `block_size`.
    """
    queries = _as_embeddings("query_emb", query_emb)
    items = _as_embeddings("item_emb", item_emb)
    if queries.shape != items.shape:
        raise ValueError(
            f"query_emb and item_emb must have the same [N, D] shape, got {queries.shape} and {items.shape}."
        )
    if queries.shape[0] == 0:
        raise ValueError("retrieval metrics need at least one query/item pair, got 0.")
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size <= 0:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}.")
    num = queries.shape[0]
    ranks = np.empty(num, dtype=np.int64)
    for start in range(0, num, block_size):
        stop = min(start + block_size, num)
        rows = np.arange(stop - start)
        scores = queries[start:stop] @ items.T
        own = scores[rows, rows + start][:, None]
        higher = np.count_nonzero(scores > own, axis=1)
        tied = np.count_nonzero(scores == own, axis=1) - 1
        ranks[start:stop] = 1 + higher + tied
        del scores
    return ranks


def metrics_from_ranks(ranks) -> dict:
    """R@1/5/10 (fractions in [0, 1]), median and mean rank of 1-based ranks.

    Args:
      ranks: [N] 1-based ranks.

    Returns:
      {"r1", "r5", "r10", "median_rank", "mean_rank", "num_queries"}.
    """
    ranks = np.asarray(ranks)
    result = {f"r{k}": float(np.mean(ranks <= k)) for k in RECALL_AT}
    result["median_rank"] = float(np.median(ranks))
    result["mean_rank"] = float(np.mean(ranks))
    result["num_queries"] = int(ranks.shape[0])
    return result


def retrieval_metrics(query_emb, item_emb, block_size: int = 4096) -> dict:
    """Retrieval metrics of queries against items, row i matching item i.

    Args:
      query_emb: [N, D] queries (rows).
      item_emb: [N, D] items (columns).
      block_size: queries per block; see `retrieval_ranks` for the memory bound.

    Returns:
      {"r1", "r5", "r10"} as fractions in [0, 1], "median_rank", "mean_rank" and
      "num_queries"; ties count against the query (see `retrieval_ranks`).
    """
    return metrics_from_ranks(retrieval_ranks(query_emb, item_emb, block_size))


def both_directions(audio_emb, video_emb, block_size: int = 4096) -> dict:
    """Audio-to-video (video clip retrieval) and video-to-audio (language retrieval) metrics.

    Args:
      audio_emb: [N, D] audio embeddings.
      video_emb: [N, D] video embeddings of the same clips.
      block_size: queries per block.

    Returns:
      {"a2v": metrics, "v2a": metrics} as `retrieval_metrics` returns them.
    """
    return {
        "a2v": retrieval_metrics(audio_emb, video_emb, block_size),
        "v2a": retrieval_metrics(video_emb, audio_emb, block_size),
    }
