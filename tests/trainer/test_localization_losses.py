"""Eq. 1 and 2 against hand-computed values, and the calibration targets."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.localization import losses


def test_span_smooth_l1_quadratic_branch():
    y_true = np.array([[0.2, 0.6], [0.0, 1.0]], "float32")
    y_pred = np.array([[0.3, 0.4], [0.0, 1.0]], "float32")
    # Row 0: 0.5 * 0.1^2 + 0.5 * 0.2^2 = 0.025; row 1: 0. Mean over the batch.
    assert float(losses.SpanSmoothL1()(y_true, y_pred)) == pytest.approx(0.0125, rel=1e-5)
    per_row = losses.SpanSmoothL1(reduction=None)(y_true, y_pred)
    np.testing.assert_allclose(per_row, [0.025, 0.0], rtol=1e-5, atol=1e-8)


def test_span_smooth_l1_linear_branch():
    # beta = 0.05: |0.1| -> 0.1 - 0.025 = 0.075, |0.02| -> 0.5 * 0.02^2 / 0.05 = 0.004.
    loss = losses.SpanSmoothL1(beta=0.05)
    assert float(loss([[0.2, 0.6]], [[0.3, 0.62]])) == pytest.approx(0.079, rel=1e-4)
    # The paper's beta = 1 on unnormalized errors: |3| -> 2.5, |0.5| -> 0.125.
    assert float(losses.SpanSmoothL1()([[0.0, 0.0]], [[3.0, -0.5]])) == pytest.approx(2.625, rel=1e-6)


def test_span_smooth_l1_config_and_validation():
    loss = losses.SpanSmoothL1(beta=0.5)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, losses.SpanSmoothL1) and clone.beta == 0.5
    with pytest.raises(ValueError, match="beta.*0"):
        losses.SpanSmoothL1(beta=0.0)


# A 4-segment example: the ground truth covers segments 1 and 2.
VIDEO_ATTENTION = [0.1, 0.2, 0.3, 0.4]
AUDIO_ATTENTION = [0.25, 0.25, 0.25, 0.25]
GT_MASK = [[0.0, 1.0, 1.0, 0.0]]
ATTENTION = np.stack([VIDEO_ATTENTION, AUDIO_ATTENTION], axis=-1)[None].astype("float32")


@pytest.mark.parametrize(
    "modalities, expected",
    [
        ("av", -(math.log(0.2 * 0.25) + math.log(0.3 * 0.25)) / 2),
        ("v", -(math.log(0.2) + math.log(0.3)) / 2),
        ("a", -(math.log(0.25) + math.log(0.25)) / 2),
    ],
)
def test_attention_calibration_hand_computed(modalities, expected):
    loss = losses.AttentionCalibration(modalities)
    assert float(loss(np.array(GT_MASK, "float32"), ATTENTION)) == pytest.approx(expected, rel=1e-5)


def test_attention_calibration_batch_mean_empty_mask_and_zero_weight():
    y_true = np.array([GT_MASK[0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], "float32")
    attention = np.concatenate([ATTENTION, ATTENTION, np.zeros((1, 4, 2), "float32")])
    per_row = losses.AttentionCalibration("av", reduction=None)(y_true, attention).numpy()
    assert per_row[0] == pytest.approx(-(math.log(0.05) + math.log(0.075)) / 2, rel=1e-5)
    assert per_row[1] == 0.0  # No ground-truth segment: no loss, no NaN.
    # A zero weight on a true segment is large but finite: -2 log(1e-12).
    assert per_row[2] == pytest.approx(-2 * math.log(1e-12), rel=1e-4)
    mean = float(losses.AttentionCalibration("av")(y_true, attention))
    assert mean == pytest.approx(per_row.mean(), rel=1e-5)


def test_attention_calibration_gradient_is_finite_with_zero_weights():
    attention = tf.Variable(np.zeros((1, 4, 2), "float32"))
    with tf.GradientTape() as tape:
        value = losses.AttentionCalibration("av")(np.array(GT_MASK, "float32"), attention)
    assert np.all(np.isfinite(tape.gradient(value, attention).numpy()))


def test_attention_calibration_config_and_validation():
    loss = losses.AttentionCalibration("v", epsilon=1e-6)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert (clone.modalities, clone.epsilon) == ("v", 1e-6)
    with pytest.raises(ValueError, match="'va'"):
        losses.AttentionCalibration("va")
    with pytest.raises(ValueError, match="epsilon.*-1"):
        losses.AttentionCalibration(epsilon=-1.0)


@pytest.mark.parametrize(
    "span, mask, expected",
    [
        # 4 real segments of width 0.25.
        ((0.3, 0.6), [1, 1, 1, 1], [0, 1, 1, 0]),
        ((0.25, 0.5), [1, 1, 1, 1], [0, 1, 0, 0]),  # Touching a boundary is no overlap.
        ((0.0, 1.0), [1, 1, 1, 1], [1, 1, 1, 1]),
        ((0.5, 0.5), [1, 1, 1, 1], [0, 0, 1, 0]),  # A point marks its segment.
        # 2 real segments (of width 0.5) and 2 padded ones.
        ((0.3, 0.6), [1, 1, 0, 0], [1, 1, 0, 0]),
        ((0.6, 0.9), [1, 1, 0, 0], [0, 1, 0, 0]),
        ((1.0, 1.0), [1, 1, 0, 0], [0, 1, 0, 0]),
    ],
)
def test_calibration_targets(span, mask, expected):
    targets = losses.calibration_targets(tf.constant([span]), tf.constant([mask], tf.float32))
    np.testing.assert_array_equal(targets.numpy(), [expected])


def test_calibration_targets_in_tf_data():
    spans = np.array([[0.3, 0.6], [0.6, 0.9]], "float32")
    masks = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], "float32")
    dataset = tf.data.Dataset.from_tensor_slices((spans, masks)).map(losses.calibration_targets)
    np.testing.assert_array_equal(np.stack(list(dataset.as_numpy_iterator())), [[0, 1, 1, 0], [0, 1, 0, 0]])
