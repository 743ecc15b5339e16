"""Retrieval metrics (R@1/5/10, median and mean rank) in bounded memory, and their evaluation of AVLnet."""

from __future__ import annotations

import logging
from typing import Optional

import keras
import numpy as np

from trainer.retrieval.model import AUDIO_EMBEDDING, VALID, VIDEO_EMBEDDING

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


def embed_dataset(model: keras.Model, dataset) -> tuple[np.ndarray, np.ndarray, int]:
    """Audio and video embeddings of the usable clips of a dataset.

    Args:
      model: an AVLnet model.
      dataset: iterable of input dicts (or tuples whose first element is one).

    Returns:
      (audio [N, E], video [N, E], number of clips skipped as unusable: no audio,
      no valid visual step, or NaN/Inf in their inputs).
    """
    audio, video, skipped = [], [], 0
    for element in dataset:
        inputs = element[0] if isinstance(element, (tuple, list)) else element
        outputs = model.predict_on_batch(inputs)
        keep = np.asarray(outputs[VALID]) > 0.5
        skipped += int(np.sum(~keep))
        audio.append(np.asarray(outputs[AUDIO_EMBEDDING])[keep])
        video.append(np.asarray(outputs[VIDEO_EMBEDDING])[keep])
    if not audio:
        raise ValueError("the evaluation dataset is empty.")
    return np.concatenate(audio), np.concatenate(video), skipped


def evaluate_retrieval(model: keras.Model, dataset, block_size: int = 4096) -> dict:
    """Retrieval metrics of a model over a whole dataset, in both directions.

    Every usable clip of the dataset is a query and an item (the candidate set is
    the dataset, as in AVLnet's YouCook2 evaluation), so the dataset should be the
    fixed evaluation split, neither shuffled nor repeated.

    Args:
      model: an AVLnet model.
      dataset: finite iterable of input dicts (e.g. a batched `tf.data.Dataset`).
      block_size: queries per block of the rank computation.

    Returns:
      A flat dict ready for logging: "a2v_r1", "a2v_r5", "a2v_r10",
      "a2v_median_rank", "a2v_mean_rank", the same with "v2a_", "num_clips" and
      "num_skipped".

    Raises:
      ValueError: no usable clip in the dataset.
    """
    audio, video, skipped = embed_dataset(model, dataset)
    if audio.shape[0] == 0:
        raise ValueError(f"no usable clip in the evaluation dataset ({skipped} skipped).")
    result = {}
    for direction, values in both_directions(audio, video, block_size).items():
        for key, value in values.items():
            if key != "num_queries":
                result[f"{direction}_{key}"] = value
    result["num_clips"] = int(audio.shape[0])
    result["num_skipped"] = skipped
    return result


class RetrievalEvaluation(keras.callbacks.Callback):
    """Adds retrieval metrics of a validation dataset to the epoch logs.

    Place it before `keras.callbacks.TensorBoard` (and any checkpoint or early
    stopping callback that monitors these keys) in the callback list: callbacks
    see the logs in list order.
    """

    def __init__(self, dataset, prefix: str = "val_", every_n_epochs: int = 1, block_size: int = 4096):
        """Initializes the callback.

        Args:
          dataset: the finite, unshuffled validation dataset of input dicts.
          prefix: prefix of the log keys (e.g. "val_a2v_r1").
          every_n_epochs: evaluate after every n-th epoch (and never in between).
          block_size: queries per block of the rank computation.

        Raises:
          ValueError: a non-positive `every_n_epochs`.
        """
        super().__init__()
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs <= 0:
            raise ValueError(f"every_n_epochs must be a positive integer, got {every_n_epochs!r}.")
        self.dataset = dataset
        self.prefix = prefix
        self.every_n_epochs = every_n_epochs
        self.block_size = block_size

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None):
        if (epoch + 1) % self.every_n_epochs:
            return
        result = evaluate_retrieval(self.model, self.dataset, self.block_size)
        logging.info(
            "epoch %d retrieval: A->V R@1 %.4f R@5 %.4f R@10 %.4f MedR %.1f | V->A R@1 %.4f R@5 %.4f R@10 %.4f MedR %.1f",
            epoch + 1,
            result["a2v_r1"],
            result["a2v_r5"],
            result["a2v_r10"],
            result["a2v_median_rank"],
            result["v2a_r1"],
            result["v2a_r5"],
            result["v2a_r10"],
            result["v2a_median_rank"],
        )
        if logs is not None:
            logs.update({f"{self.prefix}{key}": value for key, value in result.items()})
