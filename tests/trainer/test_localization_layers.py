"""Shapes, masking and config round trips of the localization layers."""

import numpy as np
import pytest
import tensorflow as tf

from trainer.localization import layers

RNG = np.random.default_rng(0)


def _normal(*shape):
    return tf.constant(RNG.normal(size=shape).astype("float32"))


SEGMENT_MASK = tf.constant([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], "float32")
WORD_MASK = tf.constant([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], "float32")


def test_masked_softmax_zeroes_padding_and_never_nans():
    logits = tf.constant([[1.0, 2.0, 3.0], [3.0, 50.0, 3.0], [4.0, 5.0, 6.0]])
    mask = tf.constant([[1, 1, 0], [1, 0, 1], [0, 0, 0]], "float32")
    with tf.GradientTape() as tape:
        tape.watch(logits)
        weights = layers.masked_softmax(logits, mask)
    expected_row0 = np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum()
    np.testing.assert_allclose(weights[0, :2], expected_row0, rtol=1e-6)
    np.testing.assert_allclose(weights[1], [0.5, 0.0, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(weights[2], [0.0, 0.0, 0.0])
    assert np.all(np.isfinite(tape.gradient(weights, logits)))


def test_masked_mean_ignores_padding():
    sequence = tf.constant([[[1.0], [3.0], [100.0]], [[5.0], [7.0], [9.0]]])
    mean = layers.masked_mean(sequence, tf.constant([[1, 1, 0], [0, 0, 0]], "float32"))
    np.testing.assert_allclose(mean, [[2.0], [0.0]])


def test_additive_attention_matches_hand_computation():
    layer = layers.AdditiveAttention(3)
    sequence, guide = _normal(2, 5, 4), _normal(2, 6)
    layer(sequence, guide, SEGMENT_MASK[:2])
    layer.bias.assign([0.1, -0.2, 0.3])  # Built with zeros; make the bias count.
    attended, weights = layer(sequence, guide, SEGMENT_MASK[:2])
    assert attended.shape == (2, 4) and weights.shape == (2, 5)
    w_guide, w_seq, bias, score = (
        v.numpy() for v in (layer.guide_kernel, layer.sequence_kernel, layer.bias, layer.score_kernel)
    )
    x, g = sequence.numpy(), guide.numpy()
    logits = (np.tanh(x @ w_seq + (g @ w_guide)[:, None, :] + bias) @ score)[..., 0]
    for b, valid in enumerate([5, 3]):
        e = np.exp(logits[b, :valid] - logits[b, :valid].max())
        expected = np.concatenate([e / e.sum(), np.zeros(5 - valid)])
        np.testing.assert_allclose(weights[b], expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(attended[b], expected @ x[b], rtol=1e-5, atol=1e-6)


def test_additive_attention_fully_masked_row_and_reuse():
    layer = layers.AdditiveAttention(4)
    sequence = _normal(3, 5, 2)
    attended, weights = layer(sequence, _normal(3, 7), SEGMENT_MASK)
    np.testing.assert_array_equal(weights[2], np.zeros(5))
    np.testing.assert_array_equal(attended[2], np.zeros(2))
    np.testing.assert_allclose(np.sum(weights[:2], axis=-1), [1.0, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(weights[1, 3:], [0.0, 0.0])
    # A second call with another guide of the same width shares the weights.
    layer(sequence, _normal(3, 7), SEGMENT_MASK)
    assert len(layer.weights) == 4
    assert [w.path.split("/")[-1] for w in layer.weights] == ["guide_kernel", "sequence_kernel", "bias", "score_kernel"]


def test_additive_attention_config_round_trip_and_validation():
    layer = layers.AdditiveAttention(5, name="att")
    clone = layers.AdditiveAttention.from_config(layer.get_config())
    assert clone.units == 5 and clone.name == "att"
    with pytest.raises(ValueError, match="units.*0"):
        layers.AdditiveAttention(0)


def test_sequence_encoder_shapes_and_masking():
    encoder = layers.SequenceEncoder(6, dropout=0.2)
    features = _normal(3, 5, 4)
    states = encoder(features, SEGMENT_MASK)
    assert states.shape == (3, 5, 6)
    np.testing.assert_array_equal(states[1, 3:], np.zeros((2, 6)))
    np.testing.assert_array_equal(states[2], np.zeros((5, 6)))
    # What sits in the padding never reaches the real steps (backward LSTM included).
    noisy = features.numpy()
    noisy[1, 3:] = 1000.0
    np.testing.assert_allclose(encoder(tf.constant(noisy), SEGMENT_MASK)[:2], states[:2], rtol=1e-5, atol=1e-6)
    assert np.all(states.numpy() >= 0.0)  # ReLU fusion.
    clone = layers.SequenceEncoder.from_config(encoder.get_config())
    assert (clone.units, clone.dropout) == (6, 0.2)
    with pytest.raises(ValueError, match="dropout.*1.5"):
        layers.SequenceEncoder(4, dropout=1.5)


def test_caption_encoder_mask_and_embedding_matrix():
    encoder = layers.CaptionEncoder(vocabulary_size=7, embedding_dim=3, units=4, trainable_embeddings=False)
    ids = tf.constant([[2, 3, 1, 0], [5, 0, 0, 0]])
    states, mask = encoder(ids)
    assert states.shape == (2, 4, 4)
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(states[1, 1:], np.zeros((3, 4)))
    matrix = np.arange(21, dtype="float32").reshape(7, 3)
    encoder.set_embedding_matrix(matrix)
    np.testing.assert_array_equal(encoder.embedding.embeddings.numpy(), matrix)
    assert not encoder.embedding.trainable_weights
    with pytest.raises(ValueError, match=r"\(6, 3\).*\(7, 3\)"):
        encoder.set_embedding_matrix(np.zeros((6, 3)))
    clone = layers.CaptionEncoder.from_config(encoder.get_config())
    assert clone.get_config() == encoder.get_config()


@pytest.mark.parametrize("modalities, num_attentions", [("av", 3), ("v", 2), ("a", 2)])
def test_co_attention_variants(modalities, num_attentions):
    layer = layers.CoAttention(modalities, units=5)
    words, video, audio = _normal(3, 4, 6), _normal(3, 5, 7), _normal(3, 5, 3)
    kwargs = {}
    if "v" in modalities:
        kwargs["video"] = video
    if "a" in modalities:
        kwargs["audio"] = audio
    out = layer(words, WORD_MASK, SEGMENT_MASK, **kwargs)
    width = {"av": 7 + 3, "v": 7, "a": 3}[modalities] + 6
    assert out["attention"].shape == (3, 5, 2)
    assert out["fused_attention"].shape == (3, 5)
    assert out["features"].shape == (3, width)
    assert out["word_attention"].shape == (3, 4)
    # Step 3 reuses step 1's attention: one attention per modality plus the words'.
    assert len(layer.weights) == 4 * num_attentions
    attention = out["attention"].numpy()
    np.testing.assert_allclose(attention[:2].sum(axis=1), np.ones((2, 2)), rtol=1e-5)
    np.testing.assert_array_equal(attention[1, 3:], np.zeros((2, 2)))
    np.testing.assert_allclose(out["fused_attention"][:2].numpy().sum(axis=1), [1.0, 1.0], rtol=1e-5)
    if modalities != "av":
        np.testing.assert_array_equal(attention[..., 0], attention[..., 1])
    word_attention = out["word_attention"].numpy()
    np.testing.assert_allclose(word_attention[0, :3].sum(), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(word_attention[0, 3], 0.0)
    np.testing.assert_allclose(word_attention[1], [1.0, 0.0, 0.0, 0.0], rtol=1e-6)
    # The fully masked third example (no segment, no word) gives zeros, not NaN.
    for value in out.values():
        assert np.all(np.isfinite(value.numpy()))
    np.testing.assert_array_equal(attention[2], np.zeros((5, 2)))


def test_co_attention_attends_words_not_their_mean():
    """Step 2 must depend on each word state, not only on the sentence mean."""
    layer = layers.CoAttention("av", units=5)
    video, audio = _normal(1, 5, 7), _normal(1, 5, 3)
    words = _normal(1, 4, 6).numpy()
    mask, segment_mask = tf.ones((1, 4)), tf.ones((1, 5))
    out = layer(tf.constant(words), mask, segment_mask, video=video, audio=audio)
    # Swapping two words keeps the mean (step 1 unchanged) but must move their weights.
    swapped = words[:, [1, 0, 2, 3]]
    out_swapped = layer(tf.constant(swapped), mask, segment_mask, video=video, audio=audio)
    weights, weights_swapped = out["word_attention"].numpy()[0], out_swapped["word_attention"].numpy()[0]
    assert not np.allclose(weights[0], weights[1])
    np.testing.assert_allclose(weights_swapped[[1, 0, 2, 3]], weights, rtol=1e-5)


def test_co_attention_config_and_missing_input():
    layer = layers.CoAttention("v", units=3, name="co")
    assert layers.CoAttention.from_config(layer.get_config()).get_config() == layer.get_config()
    with pytest.raises(ValueError, match="'x'"):
        layers.CoAttention("x")
    with pytest.raises(ValueError, match="needs `video`"):
        layers.CoAttention("av", units=3)(_normal(1, 2, 4), tf.ones((1, 2)), tf.ones((1, 3)), audio=_normal(1, 3, 2))


def test_span_regressor_orders_and_bounds():
    layer = layers.SpanRegressor(8)
    spans = layer(_normal(64, 5) * 10.0).numpy()
    assert spans.shape == (64, 2)
    assert np.all(spans >= 0.0) and np.all(spans <= 1.0)
    assert np.all(spans[:, 0] <= spans[:, 1])
    clone = layers.SpanRegressor.from_config(layer.get_config())
    assert clone.hidden_units == 8
    with pytest.raises(ValueError, match="hidden_units.*-1"):
        layers.SpanRegressor(-1)
