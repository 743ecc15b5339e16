"""Temporal localization metrics: IoU, R@K at IoU m, mIoU (numpy and Keras).

All spans are (start, end) pairs in one unit (normalized or seconds: IoU is
scale-free). "R@1, IoU=m" is the fraction of captions whose prediction has
IoU >= m with the ground truth, as in ABLR's and MALTA's evaluation code.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

from trainer.localization import decoding

DEFAULT_THRESHOLDS = (0.1, 0.3, 0.5, 0.7)


def _spans(name: str, value) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim < 1 or array.shape[-1] != 2:
        raise ValueError(f"{name} must have shape [..., 2] (start, end), got {array.shape}.")
    return array


def recall_key(threshold: float, k: int = 1) -> str:
    """Name of the R@k, IoU=threshold metric, e.g. "r1_iou_0.5"."""
    return f"r{k}_iou_{threshold:g}"


def temporal_iou(pred, gt) -> np.ndarray:
    """Intersection over union of paired 1-D intervals.

    A reversed interval (end < start) counts as empty; a pair whose union is
    empty (two identical points) has IoU 0.

    Args:
      pred: [..., 2] (start, end).
      gt: [..., 2], broadcastable against `pred`.

    Returns:
      IoU [...] in [0, 1].

    Raises:
      ValueError: an input whose last axis is not 2.
    """
    pred, gt = _spans("pred", pred), _spans("gt", gt)
    inter = np.clip(np.minimum(pred[..., 1], gt[..., 1]) - np.maximum(pred[..., 0], gt[..., 0]), 0.0, None)
    union = np.clip(pred[..., 1] - pred[..., 0], 0.0, None) + np.clip(gt[..., 1] - gt[..., 0], 0.0, None) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def recall_at_iou(pred, gt, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict[str, float]:
    """R@1 at each IoU threshold.

    Args:
      pred: [N, 2] predicted spans.
      gt: [N, 2] ground-truth spans.
      thresholds: IoU thresholds m.

    Returns:
      {"r1_iou_<m>": fraction of rows with IoU >= m}.
    """
    iou = temporal_iou(pred, gt)
    if iou.size == 0:
        raise ValueError("recall_at_iou needs at least one prediction.")
    return {recall_key(t): float(np.mean(iou >= t)) for t in thresholds}


def mean_iou(pred, gt) -> float:
    """Mean IoU over rows of [N, 2] predictions and ground truths."""
    iou = temporal_iou(pred, gt)
    if iou.size == 0:
        raise ValueError("mean_iou needs at least one prediction.")
    return float(np.mean(iou))


def snap_to_grid(spans, num_segments) -> np.ndarray:
    """Snaps normalized spans down to the segment grid, as the reference code does.

    ABLR's and MALTA's evaluation turns a normalized prediction x into
    int(x * M) / M before comparing it with the ground truth: both start and
    end are floored to a segment boundary (so a prediction inside one segment
    collapses to an empty span there). Values are first clipped to [0, 1].

    Args:
      spans: [..., 2] normalized (start, end).
      num_segments: M, an int or an array broadcastable to spans[..., 0] (per
        video: the number of real segments that evenly split its duration).

    Returns:
      float64 [..., 2] snapped spans.

    Raises:
      ValueError: a non-positive segment count.
    """
    spans = _spans("spans", spans)
    segments = np.asarray(num_segments, dtype=np.float64)
    if np.any(segments <= 0):
        raise ValueError(f"num_segments must be positive, got {num_segments!r}.")
    segments = np.expand_dims(segments, -1) if segments.ndim else segments
    return np.floor(np.clip(spans, 0.0, 1.0) * segments) / segments


def evaluate_spans(pred, gt, num_segments, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict[str, float]:
    """R@1 at IoU m and mIoU, on the raw and on the grid-snapped predictions.

    Args:
      pred: [N, 2] normalized predicted spans.
      gt: [N, 2] normalized ground-truth spans.
      num_segments: M (int) or per-caption segment counts [N], see `snap_to_grid`.
      thresholds: IoU thresholds m.

    Returns:
      {"r1_iou_<m>", "miou", "snapped_r1_iou_<m>", "snapped_miou"} -> float.
    """
    snapped = snap_to_grid(pred, num_segments)
    results = recall_at_iou(pred, gt, thresholds)
    results["miou"] = mean_iou(pred, gt)
    results.update({f"snapped_{k}": v for k, v in recall_at_iou(snapped, gt, thresholds).items()})
    results["snapped_miou"] = mean_iou(snapped, gt)
    return results


def temporal_nms(proposals, scores, iou_threshold: float, top_k: int) -> np.ndarray:
    """Greedy temporal non-maximum suppression.

    Args:
      proposals: [K, 2] spans.
      scores: [K] scores, higher is better.
      iou_threshold: a proposal is dropped when its IoU with a kept, better
        one exceeds this.
      top_k: the most proposals kept.

    Returns:
      int indices into `proposals` of the kept ones, best first.

    Raises:
      ValueError: mismatched shapes, `top_k` < 1 or a threshold outside [0, 1].
    """
    proposals = _spans("proposals", proposals)
    scores = np.asarray(scores, dtype=np.float64)
    if proposals.ndim != 2 or scores.shape != proposals.shape[:1]:
        raise ValueError(f"proposals [K, 2] and scores [K] disagree: {proposals.shape} vs {scores.shape}.")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}.")
    kept: list[int] = []
    for index in np.argsort(-scores, kind="stable"):
        if len(kept) == top_k:
            break
        if kept and np.max(temporal_iou(proposals[kept], proposals[index])) > iou_threshold:
            continue
        kept.append(int(index))
    return np.asarray(kept, dtype=np.int64)


def recall_at_k_iou(
    proposals,
    scores,
    gt,
    k: int = 5,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    nms_threshold: float | None = None,
) -> dict[str, float]:
    """R@k at IoU m for ranked multi-proposal outputs.

    Args:
      proposals: [N, K, 2] candidate spans per caption.
      scores: [N, K] their scores.
      gt: [N, 2] ground truths.
      k: how many top proposals count.
      thresholds: IoU thresholds m.
      nms_threshold: when set, temporal NMS at this IoU picks the top k;
        otherwise the k best-scored proposals are used.

    Returns:
      {"r<k>_iou_<m>": fraction of captions with a top-k proposal of IoU >= m}.

    Raises:
      ValueError: mismatched shapes or `k` < 1.
    """
    proposals, gt = _spans("proposals", proposals), _spans("gt", gt)
    scores = np.asarray(scores, dtype=np.float64)
    if proposals.ndim != 3 or scores.shape != proposals.shape[:2] or gt.shape != (proposals.shape[0], 2):
        raise ValueError(
            f"expected proposals [N, K, 2], scores [N, K], gt [N, 2]; got {proposals.shape}, {scores.shape}, {gt.shape}."
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    if proposals.shape[0] == 0:
        raise ValueError("recall_at_k_iou needs at least one caption.")
    best = np.zeros(proposals.shape[0])
    for i in range(proposals.shape[0]):
        if nms_threshold is None:
            chosen = np.argsort(-scores[i], kind="stable")[:k]
        else:
            chosen = temporal_nms(proposals[i], scores[i], nms_threshold, k)
        best[i] = np.max(temporal_iou(proposals[i][chosen], gt[i]))
    return {recall_key(t, k): float(np.mean(best >= t)) for t in thresholds}


def _keras_iou(y_true, y_pred):
    """Per-row IoU of [B, 2] spans with keras.ops (same rules as `temporal_iou`)."""
    inter = ops.maximum(ops.minimum(y_pred[:, 1], y_true[:, 1]) - ops.maximum(y_pred[:, 0], y_true[:, 0]), 0.0)
    length_pred = ops.maximum(y_pred[:, 1] - y_pred[:, 0], 0.0)
    length_true = ops.maximum(y_true[:, 1] - y_true[:, 0], 0.0)
    union = length_pred + length_true - inter
    return ops.where(union > 0, inter / ops.where(union > 0, union, 1.0), 0.0)


class _SpanMetric(keras.metrics.Metric):
    """Weighted mean of a per-caption score; sum-aggregated, so exact under tf.distribute."""

    def __init__(self, name, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_weight(shape=(), initializer="zeros", name="total")
        self.count = self.add_weight(shape=(), initializer="zeros", name="count")

    def _accumulate(self, scores, sample_weight):
        """Adds per-caption `scores` [B] with optional per-caption weights."""
        if sample_weight is None:
            weights = ops.ones_like(scores)
        else:
            weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        self.total.assign_add(ops.sum(scores * weights))
        self.count.assign_add(ops.sum(weights))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)


def _as_spans(y_true, y_pred):
    return ops.reshape(ops.cast(y_true, "float32"), (-1, 2)), ops.reshape(ops.cast(y_pred, "float32"), (-1, 2))


@keras.saving.register_keras_serializable(package="avalign")
class RecallAtIoU(_SpanMetric):
    """Stateful R@1 at IoU >= threshold on the `span` output.

    Args:
      threshold: IoU threshold m in [0, 1].
      name: metric name, default "r1_iou_<m>".
      dtype: metric dtype.

    Raises:
      ValueError: `threshold` outside [0, 1].
    """

    def __init__(self, threshold: float, name: str | None = None, dtype=None):
        if isinstance(threshold, bool) or not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}.")
        super().__init__(name=name or recall_key(threshold), dtype=dtype)
        self.threshold = float(threshold)

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Accumulates a batch of [B, 2] true and predicted spans."""
        y_true, y_pred = _as_spans(y_true, y_pred)
        self._accumulate(ops.cast(_keras_iou(y_true, y_pred) >= self.threshold, "float32"), sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update({"threshold": self.threshold})
        return config


@keras.saving.register_keras_serializable(package="avalign")
class MeanIoU(_SpanMetric):
    """Stateful mean temporal IoU (mIoU) on the `span` output.

    Not `keras.metrics.MeanIoU`, which is a segmentation (class-confusion) metric.

    Args:
      name: metric name.
      dtype: metric dtype.
    """

    def __init__(self, name: str = "miou", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Accumulates a batch of [B, 2] true and predicted spans."""
        y_true, y_pred = _as_spans(y_true, y_pred)
        self._accumulate(_keras_iou(y_true, y_pred), sample_weight)


def attention_to_span(attention, threshold: float = 0.3) -> np.ndarray:
    """Spans read off attention weights: the contiguous run around the fused weights' peak.

    See `decoding.attention_span`, which this runs on numpy inputs (the
    serving signatures run the same code in their graph).

    Args:
      attention: [N, M, 2] or [N, M] weights.
      threshold: fraction of the peak, in (0, 1].

    Returns:
      [N, 2] normalized (start, end), on the segment grid.
    """
    return decoding.attention_span(np.asarray(attention), threshold).numpy()


PROPOSAL_THRESHOLDS = decoding.PROPOSAL_THRESHOLDS


def attention_proposals(
    attention, threshold: float = 0.3, extra_thresholds: Sequence[float] = PROPOSAL_THRESHOLDS
) -> tuple[np.ndarray, np.ndarray]:
    """Ranked span proposals from attention weights (`decoding.attention_proposals` on numpy inputs).

    Every local maximum of the fused weights gives one run around it per
    threshold (`threshold`, then `extra_thresholds`, as fractions of that
    maximum), best first; the best proposal is `attention_to_span`'s span.

    Args:
      attention: [N, M, 2] or [N, M] weights.
      threshold: the span decoder's fraction of the peak, in (0, 1].
      extra_thresholds: further fractions in (0, 1], each a proposal per peak.

    Returns:
      (proposals [N, K, 2] normalized spans on the segment grid, scores [N, K]);
      captions with fewer than K proposals are padded with empty (0, 0) spans
      scored -inf.
    """
    proposals, scores, counts = decoding.attention_proposals(np.asarray(attention), threshold, extra_thresholds)
    k = int(np.max(counts.numpy())) if counts.shape[0] else 0
    return proposals.numpy()[:, :k], scores.numpy()[:, :k]
