"""Keras layers that stop NaN and Inf at a model's input boundary, before any kernel sees them.

A non-finite value that reaches a layer poisons its output and, through the
backward pass, the gradient of every weight it meets, even where a mask later
discards the output (0 x NaN is NaN). Both models therefore clean their float
inputs first: padding becomes zeros, and a clip (or caption) holding NaN or Inf
at a valid step loses all its valid steps, so the models drop it as they drop a
clip with no data. Masks are float 0/1 tensors ([B, T], 1 = a valid step).
"""

from __future__ import annotations

import keras
from keras import ops


def _bool_mask(mask):
    return ops.greater(ops.cast(mask, "float32"), 0.0)


def _finite_clips(values, valid):
    """[B] bool: no NaN/Inf at any valid step of any of `values` ([B, T, D_k], `valid` [B, T] bool)."""
    clip_ok = None
    for value in values:
        finite = ops.all(ops.isfinite(value), axis=-1)
        ok = ops.all(ops.logical_or(finite, ops.logical_not(valid)), axis=-1)
        clip_ok = ok if clip_ok is None else ops.logical_and(clip_ok, ok)
    return clip_ok


@keras.saving.register_keras_serializable(package="avalign")
class FiniteClips(keras.layers.Layer):
    """1.0 for a clip whose valid steps hold only finite values, else 0.0.

    Lets a clip dropped for NaN/Inf in one branch be dropped from the other
    branch too (`NonFiniteGuard`'s `present`), so that it takes no part in that
    branch's batch statistics either.
    """

    def call(self, values, mask):
        """Flags the clips.

        Args:
          values: list of [B, T, D_k] tensors sharing the time axis and `mask`.
          mask: [B, T] float 0/1 mask of valid steps; padding may hold anything.

        Returns:
          [B] float32.
        """
        return ops.cast(_finite_clips(values, _bool_mask(mask)), "float32")


@keras.saving.register_keras_serializable(package="avalign")
class NonFiniteGuard(keras.layers.Layer):
    """Zeros padding and drops whole clips whose valid steps hold NaN or Inf (or flagged absent).

    A clip with a non-finite value at any valid step of any of the given streams is
    treated as having no valid step at all: its mask becomes all zeros and its
    values are replaced by zeros. The network downstream therefore never sees a
    non-finite number (which would poison the gradients of every weight it meets),
    and the model leaves the clip out by its mask. Finite values at valid
    steps pass through unchanged, bit for bit.

    Models put it first, on their float inputs, so that it also protects serving
    and any other caller. Inside the model nothing else is needed: padding and
    dropped clips are zeros, which is what masked layers expect there.
    """

    def call(self, values, mask, present=None):
        """Applies the guard.

        Args:
          values: list of [B, T, D_k] tensors sharing the time axis and `mask`.
          mask: [B, T] float 0/1 mask of valid steps.
          present: optional [B] float flags; a clip flagged 0 is dropped too (a clip
            without audio, whose stored silence must not enter batch statistics,
            or one dropped for non-finite values in another branch).

        Returns:
          (clean_values, clean_mask): the list with masked and dropped steps set to
          zero, and the [B, T] float32 mask with dropped clips zeroed.
        """
        valid = _bool_mask(mask)
        clip_ok = _finite_clips(values, valid)
        if present is not None:
            clip_ok = ops.logical_and(clip_ok, _bool_mask(present))
        valid = ops.logical_and(valid, clip_ok[:, None])
        clean = [ops.where(valid[:, :, None], value, ops.zeros_like(value)) for value in values]
        return clean, ops.cast(valid, "float32")
