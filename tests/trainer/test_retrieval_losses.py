"""MMS loss: hand-computed values, masking, adaptive margin, NaN-safety."""

import math

import numpy as np
import pytest
import tensorflow as tf

from trainer.retrieval.losses import mms_loss

# S = A V^T = [[2, 0, 1], [0, 1, 0], [2, 1, 1]].
A = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], "float32")
V = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]], "float32")
e = math.exp


def _neg_log_softmax(target, logits):
    return -math.log(e(target) / sum(e(v) for v in logits))


def test_hand_computed_three_by_three_with_margin_both_directions():
    # Margin 0.5 on the diagonal: S' = [[1.5, 0, 1], [0, 0.5, 0], [2, 1, 0.5]].
    rows = [
        _neg_log_softmax(1.5, [1.5, 0.0, 1.0]),
        _neg_log_softmax(0.5, [0.0, 0.5, 0.0]),
        _neg_log_softmax(0.5, [2.0, 1.0, 0.5]),
    ]
    columns = [
        _neg_log_softmax(1.5, [1.5, 0.0, 2.0]),
        _neg_log_softmax(0.5, [0.0, 0.5, 1.0]),
        _neg_log_softmax(0.5, [1.0, 0.0, 0.5]),
    ]
    expected = sum(rows) / 3 + sum(columns) / 3
    assert float(mms_loss(A, V, margin=0.5)) == pytest.approx(expected, rel=1e-6)
    # The default AVLnet margin (0.001) is barely different from none, but is applied.
    no_margin = float(mms_loss(A, V, margin=0.0))
    assert float(mms_loss(A, V)) > no_margin


def test_audio_present_masks_rows_and_columns():
    # Clip 1 masked: S' over clips {0, 2} = [[1.5, 1], [2, 0.5]].
    expected = (_neg_log_softmax(1.5, [1.5, 1.0]) + _neg_log_softmax(0.5, [2.0, 0.5])) / 2 + (
        _neg_log_softmax(1.5, [1.5, 2.0]) + _neg_log_softmax(0.5, [1.0, 0.5])
    ) / 2
    present = np.array([1.0, 0.0, 1.0], "float32")
    assert float(mms_loss(A, V, margin=0.5, audio_present=present)) == pytest.approx(expected, rel=1e-6)
    # Whatever the masked clip holds, NaN included, the loss and gradients do not see it.
    a_bad, v_bad = A.copy(), V.copy()
    a_bad[1] = np.nan
    v_bad[1] = np.inf
    a_var, v_var = tf.Variable(a_bad), tf.Variable(v_bad)
    with tf.GradientTape() as tape:
        loss = mms_loss(a_var, v_var, margin=0.5, audio_present=present)
    grads = tape.gradient(loss, [a_var, v_var])
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    for grad in grads:
        grad = grad.numpy()
        assert np.all(np.isfinite(grad)) and np.all(grad[1] == 0.0) and np.any(grad[0] != 0.0)


@pytest.mark.parametrize(
    "audio, video, present",
    [
        (A[:1], V[:1], None),  # a batch of one
        (np.full((1, 2), np.nan, "float32"), np.full((1, 2), np.nan, "float32"), np.zeros(1, "float32")),
        (A, V, np.array([0.0, 1.0, 0.0], "float32")),  # one valid clip
        (A, V, np.zeros(3, "float32")),  # none
    ],
)
def test_fewer_than_two_valid_clips_give_zero_and_finite_gradients(audio, video, present):
    a_var, v_var = tf.Variable(audio), tf.Variable(video)
    with tf.GradientTape() as tape:
        loss = mms_loss(a_var, v_var, audio_present=present)
    grads = tape.gradient(loss, [a_var, v_var])
    assert float(loss) == 0.0
    assert all(np.all(g.numpy() == 0.0) for g in grads)


def test_adaptive_mean_margin_matches_definition():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 4)).astype("float32")
    v = rng.normal(size=(5, 4)).astype("float32")
    present = np.array([1, 1, 0, 1, 1], "float32")
    keep = present > 0
    s = (a[keep].astype(np.float64)) @ v[keep].T.astype(np.float64)
    n = s.shape[0]
    margins = 0.5 * (np.diag(s) - (s.sum(axis=1) - np.diag(s)) / (n - 1))
    s = s - np.diag(margins)
    rows = -np.mean([s[i, i] - np.log(np.exp(s[i]).sum()) for i in range(n)])
    cols = -np.mean([s[j, j] - np.log(np.exp(s[:, j]).sum()) for j in range(n)])
    got = float(mms_loss(a, v, audio_present=present, adaptive=True, adaptive_scale=0.5))
    assert got == pytest.approx(rows + cols, rel=1e-5)
    assert got != pytest.approx(float(mms_loss(a, v, audio_present=present)), rel=1e-3)


def test_confident_correct_embeddings_give_near_zero_and_random_about_two_log_b():
    eye = np.eye(8, dtype="float32") * 30.0
    assert float(mms_loss(eye, eye)) < 1e-6
    assert float(mms_loss(np.ones((8, 4), "float32"), np.ones((8, 4), "float32"), margin=0.0)) == pytest.approx(
        2 * math.log(8), rel=1e-6
    )


def test_negative_margin_is_rejected():
    with pytest.raises(ValueError, match="margin must be >= 0, got -0.1"):
        mms_loss(A, V, margin=-0.1)
