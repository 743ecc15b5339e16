"""The masked margin softmax (MMS) loss of AVLnet (Ilharco et al., CoNLL 2019), with its adaptive-margin variant."""

from __future__ import annotations

from keras import ops

# Logit given to pairs that involve a masked clip: exp(-1e9 - max) is exactly 0 in float32.
_MASKED_LOGIT = -1e9


def mms_loss(audio_emb, video_emb, margin=0.001, audio_present=None, adaptive=False, adaptive_scale=0.5):
    """Masked margin softmax loss over the batch, summed over both retrieval directions.

    With S = A V^T (dot products of the unnormalized embeddings) over the B' valid
    clips of the batch and the margin m_i subtracted from each matching pair,

        L = -1/B' sum_i log softmax_j(S_ij - m_i [i = j])_i     (audio -> video, rows)
            -1/B' sum_j log softmax_i(S_ij - m_j [i = j])_j     (video -> audio, columns)

    i.e. the mean cross-entropy of each direction, and the two directions added, as
    in AVLnet's reference code (so a perfect model still scores 0 and a random one
    about 2 log B').

    The fixed margin is `margin`. With `adaptive=True` it is the adaptive mean margin
    as AVLnet's code defines it: m_i = adaptive_scale * (S_ii - mean_{j != i} S_ij),
    the mean taken over the valid clips of row i (audio i against the other videos),
    computed without stopping gradients, and applied to the diagonal for both
    directions.

    Clips with `audio_present` == 0 are removed from both directions: their rows
    and columns take no part in any softmax and they add no term. Their embeddings
    are replaced by zeros first, so NaN or Inf there cannot reach the loss or its
    gradient. Fewer than two valid clips leave no negative pair to contrast, and
    the loss is exactly 0.

    Args:
      audio_emb: [B, E] audio embeddings (row i pairs with `video_emb` row i).
      video_emb: [B, E] video embeddings.
      margin: fixed margin (non-negative), used when `adaptive` is False.
      audio_present: optional [B] float or bool; 0 / False masks a clip out.
      adaptive: use the adaptive mean margin instead of `margin`.
      adaptive_scale: scale of the adaptive mean margin (AVLnet's default 0.5).

    Returns:
      Scalar float32 loss.

    Raises:
      ValueError: a negative `margin`.
    """
    if not margin >= 0.0:
        raise ValueError(f"margin must be >= 0, got {margin!r}.")
    audio_emb = ops.cast(audio_emb, "float32")
    video_emb = ops.cast(video_emb, "float32")
    batch = ops.shape(audio_emb)[0]
    if audio_present is None:
        valid = ops.ones((batch,), dtype="bool")
    else:
        valid = ops.greater(ops.cast(audio_present, "float32"), 0.0)
    row_valid = valid[:, None]
    audio_emb = ops.where(row_valid, audio_emb, ops.zeros_like(audio_emb))
    video_emb = ops.where(row_valid, video_emb, ops.zeros_like(video_emb))
    scores = ops.matmul(audio_emb, ops.transpose(video_emb))

    index = ops.arange(batch, dtype="int32")
    diagonal = ops.equal(index[:, None], index[None, :])
    pair_valid = ops.logical_and(row_valid, valid[None, :])
    num_valid = ops.sum(ops.cast(valid, "float32"))

    if adaptive:
        negatives = ops.logical_and(pair_valid, ops.logical_not(diagonal))
        negative_mean = ops.sum(ops.where(negatives, scores, ops.zeros_like(scores)), axis=1) / ops.maximum(
            num_valid - 1.0, 1.0
        )
        margins = adaptive_scale * (ops.diagonal(scores) - negative_mean)
    else:
        margins = ops.full((batch,), margin, dtype="float32")
    scores = scores - ops.where(diagonal, margins[:, None], ops.zeros_like(scores))
    logits = ops.where(pair_valid, scores, ops.full_like(scores, _MASKED_LOGIT))

    weights = ops.cast(valid, "float32")
    audio_to_video = -ops.diagonal(ops.log_softmax(logits, axis=1))
    video_to_audio = -ops.diagonal(ops.log_softmax(logits, axis=0))
    denominator = ops.maximum(num_valid, 1.0)
    loss = ops.sum(weights * audio_to_video) / denominator + ops.sum(weights * video_to_audio) / denominator
    return ops.where(ops.greater(num_valid, 1.0), loss, ops.zeros_like(loss))
