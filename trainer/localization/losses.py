"""MALTA's training losses (eq. 1 and 2) and the targets they compare against.

Eq. 1, L_reg = sum_i [R(s_hat_i - s_i) + R(e_hat_i - e_i)], R the smooth-L1
function of Fast R-CNN (0.5 x^2 for |x| < 1, |x| - 0.5 otherwise), on times
normalized by the video's duration. Since normalized times lie in [0, 1], every
difference has |x| <= 1 and R is in practice its quadratic branch.

Eq. 2, L_cal = -sum_i [sum_j delta_ij log(a_V,j * a_A,j)] / [sum_j delta_ij], with
delta_ij = 1 for the segments j inside caption i's ground-truth span: the mean,
over the true segments, of the log of the product of the final video and audio
attention weights.

Both equations sum over the N captions of a batch; here each is computed per
caption and Keras averages over the batch ("sum_over_batch_size"). That divides
both by the same N, so their 1 : 5 weighting (`loss_weights`) is unchanged and
only the effective learning rate scales.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from trainer.localization.config import MODALITIES


@keras.saving.register_keras_serializable(package="avalign")
class SpanSmoothL1(keras.losses.Loss):
    """Eq. 1: smooth-L1 of the normalized start and end, summed per caption.

    Args:
      beta: the point where R turns from quadratic to linear (1 in the paper;
        R(x) = 0.5 x^2 / beta for |x| < beta, |x| - 0.5 beta otherwise).
      reduction: Keras reduction over the batch.
      name: loss name.
      dtype: loss dtype.

    Raises:
      ValueError: `beta` is not positive.
    """

    def __init__(self, beta: float = 1.0, reduction="sum_over_batch_size", name="span_smooth_l1", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta!r}.")
        self.beta = float(beta)

    def call(self, y_true, y_pred):
        """Per-caption loss.

        Args:
          y_true: [B, 2] normalized (start, end).
          y_pred: [B, 2] predicted (start, end).

        Returns:
          [B] R(start error) + R(end error).
        """
        y_true, y_pred = ops.convert_to_tensor(y_true, self.dtype), ops.convert_to_tensor(y_pred, self.dtype)
        diff = ops.abs(y_pred - y_true)
        per_coordinate = ops.where(diff < self.beta, 0.5 * ops.square(diff) / self.beta, diff - 0.5 * self.beta)
        return ops.sum(per_coordinate, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"beta": self.beta})
        return config


@keras.saving.register_keras_serializable(package="avalign")
class AttentionCalibration(keras.losses.Loss):
    """Eq. 2: pushes the final attention onto the ground-truth segments.

    Per caption, -sum_j m_j [log(a_V,j + eps) + log(a_A,j + eps)] / sum_j m_j,
    i.e. log(a_V,j * a_A,j) computed as a sum of logs so that the product of two
    small weights cannot underflow. Single-modality variants use the one
    attention: -sum_j m_j log(a_j + eps) / sum_j m_j. A caption with no
    ground-truth segment contributes 0.

    Args:
      modalities: "av", "v" or "a", as the model's config.
      epsilon: added inside each log (ABLR: 1e-12; float32 resolves ~1e-38).
      reduction: Keras reduction over the batch.
      name: loss name.
      dtype: loss dtype.

    Raises:
      ValueError: unknown `modalities` or a non-positive `epsilon`.
    """

    def __init__(
        self,
        modalities: str = "av",
        epsilon: float = 1e-12,
        reduction="sum_over_batch_size",
        name="attention_calibration",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if modalities not in MODALITIES:
            raise ValueError(f"modalities must be one of {MODALITIES}, got {modalities!r}.")
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon!r}.")
        self.modalities = modalities
        self.epsilon = float(epsilon)

    def call(self, y_true, y_pred):
        """Per-caption loss.

        Args:
          y_true: [B, M] 0/1 ground-truth segment mask (`calibration_targets`).
          y_pred: [B, M, 2] the model's `attention` output (video, audio).

        Returns:
          [B] calibration loss.
        """
        y_pred = ops.convert_to_tensor(y_pred, self.dtype)
        mask = ops.convert_to_tensor(y_true, self.dtype)
        log_video = ops.log(y_pred[..., 0] + self.epsilon)
        log_audio = ops.log(y_pred[..., 1] + self.epsilon)
        if self.modalities == "av":
            log_joint = log_video + log_audio
        elif self.modalities == "v":
            log_joint = log_video
        else:
            log_joint = log_audio
        count = ops.sum(mask, axis=-1)
        return -ops.sum(mask * log_joint, axis=-1) / ops.maximum(count, 1.0)

    def get_config(self):
        config = super().get_config()
        config.update({"modalities": self.modalities, "epsilon": self.epsilon})
        return config


def calibration_targets(span: tf.Tensor, segment_mask: tf.Tensor) -> tf.Tensor:
    """The delta_ij of eq. 2: which segments lie inside a normalized span.

    A video's V = sum(segment_mask) real segments split its duration evenly, so
    segment j covers normalized time [j / V, (j + 1) / V). A segment is inside
    the span when it overlaps it by more than zero; a zero-length span marks
    the one segment that contains it. (ABLR marks floor(s M) .. floor(e M),
    which adds the segment that merely starts at e when e M is an integer.)
    Padded segments are never inside. Runs in tf.data or eagerly.

    Args:
      span: [..., 2] normalized (start, end), start <= end.
      segment_mask: [..., M] 1 on real segments (right-padded).

    Returns:
      float32 [..., M] 0/1 mask.
    """
    span = tf.cast(span, tf.float32)
    segment_mask = tf.cast(segment_mask, tf.float32)
    num_valid = tf.reduce_sum(segment_mask, axis=-1, keepdims=True)
    num_segments = tf.shape(segment_mask)[-1]
    index = tf.cast(tf.range(num_segments), tf.float32)
    safe_valid = tf.maximum(num_valid, 1.0)
    low, high = index / safe_valid, (index + 1.0) / safe_valid
    start, end = span[..., 0:1], span[..., 1:2]
    overlaps = tf.logical_and(low < end, high > start)
    containing = tf.minimum(tf.floor(start * safe_valid), safe_valid - 1.0)
    point = tf.equal(index, containing)
    inside = tf.where(end > start, overlaps, point)
    return tf.cast(inside, tf.float32) * segment_mask
