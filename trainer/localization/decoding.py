"""Spans read off the model's attention, in the graph: the one implementation of the attention decoders.

Evaluation (`metrics.attention_to_span`, `metrics.attention_proposals`) runs
these eagerly on numpy outputs, and the exported serving signatures run them
in their graph, so a served model decodes spans exactly as it was evaluated.
Everything is float64, as the evaluation always computed it, and uses core
TensorFlow ops only (TF Serving runs it).

The fused weight of a segment is the geometric mean of its video and audio
attention, sqrt(a_V · a_A): the product is what eq. 2 calibrates on the
ground-truth segments, and a segment only one modality attends to gets little
weight (single-modality models repeat one attention in both channels, so
theirs is that attention).
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

# The extra fractions of a peak whose runs the R@k decoder proposes.
PROPOSAL_THRESHOLDS = (0.1, 0.5, 0.7)
# Ties between proposals of equal peak weight are broken by rank, then by threshold order.
_TIE_BREAK = 1e-6


def fused_attention(attention) -> tf.Tensor:
    """[N, M] float64 fused weights of [N, M, 2] attention (or [N, M] weights, returned as float64)."""
    att = tf.cast(attention, tf.float64)
    if att.shape.rank == 3:
        att = tf.sqrt(tf.maximum(att[..., 0], 0.0) * tf.maximum(att[..., 1], 0.0))
    if att.shape.rank != 2:
        raise ValueError(f"attention must be [N, M(, 2)], got shape {attention.shape}.")
    return att


def _check_fractions(fractions: Sequence[float], what: str) -> None:
    if any(not 0.0 < float(t) <= 1.0 for t in fractions):
        raise ValueError(f"{what} must lie in (0, 1], got {tuple(fractions)}.")


def _runs(weights: tf.Tensor, peaks: tf.Tensor, fractions: Sequence[float]) -> tuple[tf.Tensor, tf.Tensor]:
    """First and last segment of the run around each peak whose weights are >= fraction × the peak's.

    Args:
      weights: [N, M] float64.
      peaks: [N, P] int32 segment indices.
      fractions: F fractions.

    Returns:
      (lo, hi) int32 [N, P, F].
    """
    m = tf.shape(weights)[1]
    peak_weight = tf.gather(weights, peaks, batch_dims=1)  # [N, P]
    thresholds = peak_weight[..., None] * tf.constant(list(fractions), tf.float64)  # [N, P, F]
    dropped = weights[:, None, None, :] < thresholds[..., None]  # [N, P, F, M]
    idx = tf.range(m)
    p = peaks[:, :, None, None]
    lo = tf.reduce_max(tf.where(dropped & (idx < p), idx, -1), axis=-1) + 1
    hi = tf.reduce_min(tf.where(dropped & (idx > p), idx, m), axis=-1) - 1
    return lo, hi


def _first_argmax(weights: tf.Tensor) -> tf.Tensor:
    """[N] int32 index of each row's first maximum (the first NaN when a row holds one, as np.argmax)."""
    m = tf.shape(weights)[1]
    idx = tf.range(m)
    nan = tf.math.is_nan(weights)
    top = tf.reduce_max(tf.where(nan, tf.constant(-float("inf"), tf.float64), weights), axis=1, keepdims=True)
    at = tf.where(tf.reduce_any(nan, axis=1, keepdims=True), nan, tf.equal(weights, top))
    return tf.reduce_min(tf.where(at, idx, m), axis=1)


def attention_span(attention, threshold: float = 0.3) -> tf.Tensor:
    """Spans read off attention weights: the contiguous run around the peak.

    The span is the run of segments around the fused weights' peak whose
    weight is at least `threshold` × the peak's; no learned regression is
    involved.

    Args:
      attention: [N, M, 2] or [N, M] weights.
      threshold: fraction of the peak, in (0, 1].

    Returns:
      [N, 2] float64 normalized (start, end), on the segment grid.
    """
    _check_fractions([threshold], "threshold")
    weights = fused_attention(attention)
    m = tf.cast(tf.shape(weights)[1], tf.float64)
    lo, hi = _runs(weights, _first_argmax(weights)[:, None], [threshold])
    return tf.stack([tf.cast(lo[:, 0, 0], tf.float64) / m, tf.cast(hi[:, 0, 0] + 1, tf.float64) / m], axis=-1)


def attention_proposals(
    attention, threshold: float = 0.3, extra_thresholds: Sequence[float] = PROPOSAL_THRESHOLDS
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Ranked span proposals from attention weights, best first.

    Every local maximum of the fused weights gives one run around it per
    fraction (`threshold`, then `extra_thresholds`, as fractions of that
    maximum). Proposals are ranked by their peak's weight, and a peak's
    `threshold` run before its other runs; so the best proposal is always
    `attention_span(attention, threshold)`'s span.

    Args:
      attention: [N, M, 2] or [N, M] weights.
      threshold: the span decoder's fraction of the peak, in (0, 1].
      extra_thresholds: further fractions in (0, 1], each a proposal per peak.

    Returns:
      (proposals [N, M·F, 2] float64 normalized spans on the segment grid,
      scores [N, M·F] float64 (a peak's weight over the highest peak's, less
      a tie-break by rank), counts [N] int32): row i holds its counts[i]
      proposals first, best first, then empty (0, 0) spans scored -inf.
    """
    fractions = [threshold] + [t for t in extra_thresholds if t != threshold]
    _check_fractions([threshold], "threshold")
    _check_fractions(fractions, "extra_thresholds")
    weights = fused_attention(attention)
    n, m = tf.shape(weights)[0], tf.shape(weights)[1]
    f = len(fractions)
    idx = tf.range(m)
    minus_inf = tf.constant(-float("inf"), tf.float64)
    left = tf.concat([tf.fill([n, 1], minus_inf), weights[:, :-1]], axis=1)
    right = tf.concat([weights[:, 1:], tf.fill([n, 1], minus_inf)], axis=1)
    # Local maxima, on a plateau its first segment; a row without any (only NaN
    # weights do that) proposes around its first argmax.
    is_peak = (weights > left) & (weights >= right)
    is_peak = tf.where(
        tf.reduce_any(is_peak, axis=1, keepdims=True), is_peak, tf.equal(idx, _first_argmax(weights)[:, None])
    )
    # Rank of each peak: the peaks with a higher weight, or the same weight earlier.
    w_q, w_p = weights[:, None, :], weights[:, :, None]
    q, p = idx[None, None, :], idx[None, :, None]
    ahead = is_peak[:, None, :] & ((w_q > w_p) | ((tf.equal(w_q, w_p)) & (q < p)))
    rank = tf.reduce_sum(tf.cast(ahead, tf.int32), axis=2)  # [N, M]
    top = tf.maximum(tf.reduce_max(tf.where(is_peak, weights, minus_inf), axis=1, keepdims=True), 1e-12)
    order = tf.range(f)
    tie = tf.cast(rank[:, :, None] * f + order[None, None, :], tf.float64) * _TIE_BREAK
    scores = (weights / top)[:, :, None] - tie  # [N, M, F]
    scores = tf.where(is_peak[:, :, None], scores, minus_inf)
    peaks = tf.broadcast_to(idx[None], [n, m])
    lo, hi = _runs(weights, peaks, fractions)
    mf = tf.cast(m, tf.float64)
    spans = tf.stack([tf.cast(lo, tf.float64) / mf, tf.cast(hi + 1, tf.float64) / mf], axis=-1)  # [N, M, F, 2]
    spans = tf.where(is_peak[:, :, None, None], spans, tf.zeros_like(spans))
    # Best first: by rank, then by threshold order (the sort key is exact, unlike the scores).
    key = tf.where(is_peak[:, :, None], rank[:, :, None] * f + order[None, None, :], m * f)
    key = tf.reshape(key, [n, m * f])
    position = tf.argsort(key, axis=1, stable=True)
    spans = tf.gather(tf.reshape(spans, [n, m * f, 2]), position, batch_dims=1)
    scores = tf.gather(tf.reshape(scores, [n, m * f]), position, batch_dims=1)
    counts = tf.reduce_sum(tf.cast(is_peak, tf.int32), axis=1) * f
    return spans, scores, counts


def top_k_proposals(
    attention,
    k: int,
    threshold: float = 0.3,
    nms_iou: float = 0.5,
    extra_thresholds: Sequence[float] = PROPOSAL_THRESHOLDS,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The R@k decoder: `attention_proposals` after greedy temporal NMS, the k best distinct ones.

    A proposal is dropped when its temporal IoU with a better kept one exceeds
    `nms_iou` (as `metrics.temporal_nms`, with the IoU computed exactly on the
    segment grid).

    Args:
      attention: [N, M, 2] or [N, M] weights.
      k: proposals kept per row.
      threshold, extra_thresholds: as `attention_proposals`.
      nms_iou: the NMS IoU threshold, in [0, 1].

    Returns:
      (spans [N, k, 2] float32 normalized, scores [N, k] float32); a row with
      fewer than k distinct proposals is padded with (0, 0) spans scored -1.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    if not 0.0 <= nms_iou <= 1.0:
        raise ValueError(f"nms_iou must be in [0, 1], got {nms_iou}.")
    spans, scores, counts = attention_proposals(attention, threshold, extra_thresholds)
    total = tf.shape(scores)[1]

    grid = tf.cast(tf.shape(scores)[1] // (1 + len([t for t in extra_thresholds if t != threshold])), tf.float64)

    def one(args):
        row_spans, row_counts = args
        # Boxes of height 1 in whole segments (exact small integers, so the IoU at
        # the threshold is exact): their IoU is the spans' temporal IoU. The
        # proposals are already best first, so NMS ranks them by position, exactly.
        ends = tf.cast(tf.round(row_spans * grid), tf.float32)
        boxes = tf.stack([tf.zeros_like(ends[:, 0]), ends[:, 0], tf.ones_like(ends[:, 0]), ends[:, 1]], axis=1)
        rank_score = -tf.cast(tf.range(total), tf.float32)
        valid = tf.range(total) < row_counts
        rank_score = tf.where(valid, rank_score, -1e9)
        kept = tf.image.non_max_suppression(
            boxes, rank_score, max_output_size=k, iou_threshold=nms_iou, score_threshold=-1e8
        )
        num = tf.shape(kept)[0]
        kept = tf.pad(kept, [[0, k - num]])
        return kept, num

    kept, num = tf.map_fn(one, (spans, counts), fn_output_signature=(tf.int32, tf.int32))
    present = tf.range(k)[None, :] < num[:, None]
    out_spans = tf.where(present[..., None], tf.gather(spans, kept, batch_dims=1), 0.0)
    out_scores = tf.where(present, tf.gather(scores, kept, batch_dims=1), -1.0)
    return tf.cast(out_spans, tf.float32), tf.cast(out_scores, tf.float32)


def span_mass(attention, spans) -> tf.Tensor:
    """The attention mass (mean of the video and audio channels) inside each span: a span's score.

    A window that holds the event concentrates its attention inside the span
    its model proposes; one that does not spreads it. The span covers the
    segments [floor(start·M), max(ceil(end·M), floor(start·M) + 1)).

    Args:
      attention: [N, M, 2] (or [N, M]) weights.
      spans: [N, 2] normalized (start, end).

    Returns:
      [N] float64 scores in [0, 1] for weights that sum to 1.
    """
    att = tf.cast(attention, tf.float64)
    if att.shape.rank == 3:
        att = tf.reduce_mean(att, axis=-1)
    spans = tf.cast(spans, tf.float64)
    m = tf.shape(att)[1]
    idx = tf.cast(tf.range(m), tf.float64)[None, :]
    lo = tf.floor(spans[:, :1] * tf.cast(m, tf.float64))
    hi = tf.maximum(tf.math.ceil(spans[:, 1:] * tf.cast(m, tf.float64)), lo + 1)
    return tf.reduce_sum(tf.where((idx >= lo) & (idx < hi), att, 0.0), axis=1)
