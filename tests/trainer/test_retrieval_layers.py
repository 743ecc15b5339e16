"""AVLnet layers: ResDAVEnet shapes, masks and numerics, pooling, gated units, guards, config round trips."""

import math

import keras
import numpy as np
import pytest

from trainer import guards
from trainer.retrieval import layers as rl

TINY = dict(num_mel_bins=40, first_conv_channels=5, widths=[4, 6, 6, 8], blocks_per_stage=2, kernel_width=5)


def _randomize_batchnorms(layer, rng):
    """Non-trivial inference statistics, so the reference check covers every BN term."""
    for bn in [sub for sub in layer._flatten_layers() if isinstance(sub, keras.layers.BatchNormalization)]:
        size = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 1.5, size).astype("float32"))
        bn.beta.assign(rng.normal(0, 0.3, size).astype("float32"))
        bn.moving_mean.assign(rng.normal(0, 0.3, size).astype("float32"))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, size).astype("float32"))


def _np_conv(x, kernel, stride):
    """Reference 1-D convolution: (w - 1) / 2 zeros each side, then stride."""
    width = kernel.shape[0]
    half = (width - 1) // 2
    padded = np.pad(x, ((half, half), (0, 0)))
    count = math.ceil(x.shape[0] / stride)
    out = np.zeros((count, kernel.shape[2]), np.float64)
    for u in range(width):
        out += padded[u : u + stride * (count - 1) + 1 : stride] @ kernel[u]
    return out


def _np_bn(x, bn):
    mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    return (x - mean) / np.sqrt(var + bn.epsilon) * bn.gamma.numpy() + bn.beta.numpy()


def _np_resdavenet(encoder, clip):
    """The encoder on one unpadded clip [L, F], written out from the paper's architecture."""
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    hidden = relu(_np_bn(clip.astype(np.float64) @ encoder.stem_kernel.numpy(), encoder.stem_bn))
    for block in encoder.blocks:
        out = relu(_np_bn(_np_conv(hidden, block.kernel1.numpy(), block.stride), block.bn1))
        out = _np_bn(_np_conv(out, block.kernel2.numpy(), 1), block.bn2)
        if block.shortcut_bn is not None:
            shortcut = _np_bn(hidden[:: block.stride] @ block.shortcut_kernel.numpy()[0], block.shortcut_bn)
        else:
            shortcut = hidden
        hidden = relu(out + shortcut)
    return hidden


def _lengths_mask(lengths, steps):
    return (np.arange(steps)[None, :] < np.asarray(lengths)[:, None]).astype("float32")


@pytest.mark.parametrize("steps, expected", [(1024, 64), (1000, 63), (17, 2), (16, 1), (15, 1), (1, 1)])
def test_resdavenet_output_frames_are_ceil_t_over_16(steps, expected):
    encoder = rl.ResDAVEnet(first_conv_channels=32, widths=[32, 64, 96, 128])
    frames, mask = encoder(np.zeros((2, steps, 40), "float32"))
    assert tuple(frames.shape) == (2, expected, 128)
    assert tuple(mask.shape) == (2, expected)
    assert encoder.total_stride == 16


def test_resdavenet_matches_reference_and_ignores_padding_content():
    rng = np.random.default_rng(0)
    encoder = rl.ResDAVEnet(**TINY)
    steps = 203
    lengths = [203, 37, 16, 1]
    audio = rng.normal(size=(4, steps, 40)).astype("float32")
    # Padding holds garbage, including values that would poison any multiply-by-mask.
    garbage = rng.normal(scale=1e4, size=audio.shape).astype("float32")
    garbage[1, 40:45] = np.nan
    garbage[2, 100:] = np.inf
    mask = _lengths_mask(lengths, steps)
    audio = np.where(mask[:, :, None] > 0, audio, garbage)
    encoder.build((None, None, 40))
    _randomize_batchnorms(encoder, rng)

    frames, out_mask = encoder(audio, mask, training=False)
    frames, out_mask = np.asarray(frames), np.asarray(out_mask)
    assert frames.shape == (4, math.ceil(steps / 16), 8)
    for i, length in enumerate(lengths):
        valid = math.ceil(length / 16)
        np.testing.assert_array_equal(out_mask[i], np.arange(frames.shape[1]) < valid)
        expected = _np_resdavenet(encoder, audio[i, :length])
        assert expected.shape == (valid, 8)
        np.testing.assert_allclose(frames[i, :valid], expected, rtol=1e-4, atol=1e-4)
        assert np.all(frames[i, valid:] == 0.0)


def test_pooled_audio_is_unchanged_by_padding_garbage_in_training_mode_too():
    rng = np.random.default_rng(1)
    encoder = rl.ResDAVEnet(first_conv_channels=8, widths=[8, 8, 16, 16])
    pool = rl.MaskedMeanPooling()
    clips = rng.normal(size=(3, 300, 40)).astype("float32")
    lengths = np.array([300, 120, 33])
    mask = _lengths_mask(lengths, 300)
    zero_padded = np.where(mask[:, :, None] > 0, clips, 0.0).astype("float32")
    garbage = np.where(mask[:, :, None] > 0, clips, rng.normal(scale=50.0, size=clips.shape)).astype("float32")
    garbage[2, 200] = np.nan
    for training in (False, True):
        pooled = [np.asarray(pool(*encoder(x, mask, training=training))) for x in (zero_padded, garbage)]
        np.testing.assert_allclose(pooled[0], pooled[1], rtol=1e-5, atol=1e-5)
        assert np.all(np.isfinite(pooled[1]))


def test_masked_batchnorm_statistics_ignore_padding():
    rng = np.random.default_rng(2)
    block = rl.ResidualBlock1D(6, kernel_width=3, stride=2, batchnorm_momentum=0.0)
    x = rng.normal(size=(2, 20, 4)).astype("float32")
    mask = _lengths_mask([20, 7], 20)
    x = np.where(mask[:, :, None] > 0, x, 0.0).astype("float32")
    block(x, mask, training=True)
    stats = block.bn1.moving_mean.numpy().copy()
    x_longer = np.concatenate([x, np.zeros((2, 30, 4), "float32")], axis=1)
    block(x_longer, np.pad(mask, ((0, 0), (0, 30))), training=True)
    # momentum 0: the moving mean is the last batch mean, over valid frames only.
    np.testing.assert_allclose(block.bn1.moving_mean.numpy(), stats, rtol=1e-5, atol=1e-6)


def test_gated_embedding_unit_matches_formula():
    rng = np.random.default_rng(3)
    unit = rl.GatedEmbeddingUnit(5)
    x = rng.normal(size=(3, 7)).astype("float32")
    y = np.asarray(unit(x))
    hidden = x @ unit.kernel.numpy() + unit.bias.numpy()
    gate = 1.0 / (1.0 + np.exp(-(hidden @ unit.gate_kernel.numpy() + unit.gate_bias.numpy())))
    np.testing.assert_allclose(y, hidden * gate, rtol=1e-5, atol=1e-6)
    normalized = rl.GatedEmbeddingUnit(5, l2_normalize=True)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(normalized(x)), axis=1), 1.0, rtol=1e-5)


def test_masked_max_pooling_uses_valid_steps_and_normalizes():
    x = np.array(
        [[[1.0, -2.0], [3.0, -1.0], [np.nan, 99.0]], [[-5.0, 0.5], [np.inf, 7.0], [8.0, 8.0]]],
        "float32",
    )
    mask = np.array([[1, 1, 0], [0, 0, 0]], "float32")
    pooled = np.asarray(rl.MaskedMaxPooling()(x, mask))
    np.testing.assert_array_equal(pooled, [[3.0, -1.0], [0.0, 0.0]])
    normalized = np.asarray(rl.MaskedMaxPooling(l2_normalize=True)(x, mask))
    np.testing.assert_allclose(normalized[0], np.array([3.0, -1.0]) / math.sqrt(10.0), rtol=1e-6)
    np.testing.assert_array_equal(normalized[1], [0.0, 0.0])


def test_masked_mean_pooling_of_empty_clip_is_zero():
    x = np.ones((2, 4, 3), "float32") * np.array([2.0, 4.0, 6.0], "float32")
    pooled = np.asarray(rl.MaskedMeanPooling()(x, np.array([[1, 1, 0, 0], [0, 0, 0, 0]], "float32")))
    np.testing.assert_array_equal(pooled, [[2.0, 4.0, 6.0], [0.0, 0.0, 0.0]])


def test_non_finite_guard_drops_clips_with_bad_valid_steps_only():
    a = np.ones((3, 4, 2), "float32")
    b = np.ones((3, 4, 1), "float32")
    a[0, 3, 0] = np.nan  # padding of clip 0: ignored
    a[1, 1, 1] = np.inf  # valid step of clip 1: clip dropped
    b[2, 0, 0] = np.nan  # valid step of the second stream of clip 2: clip dropped
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], "float32")
    (clean_a, clean_b), clean_mask = guards.NonFiniteGuard()([a, b], mask)
    np.testing.assert_array_equal(np.asarray(clean_mask), [[1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert np.all(np.isfinite(np.asarray(clean_a))) and np.all(np.isfinite(np.asarray(clean_b)))
    assert np.asarray(clean_a)[0, :3].sum() == 6.0 and np.asarray(clean_a)[1:].sum() == 0.0


def test_non_finite_guard_drops_clips_flagged_absent():
    x = np.ones((2, 3, 1), "float32")
    (clean,), mask = guards.NonFiniteGuard()([x], np.ones((2, 3), "float32"), np.array([0.0, 1.0], "float32"))
    np.testing.assert_array_equal(np.asarray(mask), [[0, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(np.asarray(clean)[:, :, 0], [[0, 0, 0], [1, 1, 1]])


def test_length_mask_clips_lengths():
    mask = np.asarray(rl.LengthMask()(np.array([0, 2, 9], "int32"), np.zeros((3, 4, 1), "float32")))
    np.testing.assert_array_equal(mask, [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]])


def test_pair_validity():
    valid = rl.PairValidity()(
        np.array([1, 0, 1, 1], "float32"),
        np.array([[1, 0], [1, 1], [0, 0], [1, 1]], "float32"),
        np.array([[1], [1], [1], [0]], "float32"),
    )
    np.testing.assert_array_equal(np.asarray(valid), [1, 0, 0, 0])


@pytest.mark.parametrize(
    "layer, inputs",
    [
        (rl.ResDAVEnet(**TINY), (np.random.default_rng(4).normal(size=(2, 40, 40)).astype("float32"),)),
        (
            rl.ResidualBlock1D(6, kernel_width=3, stride=2),
            (np.ones((2, 9, 4), "float32"), np.ones((2, 9), "float32")),
        ),
        (
            rl.GatedEmbeddingUnit(4, l2_normalize=True),
            (np.random.default_rng(5).normal(size=(2, 3)).astype("float32"),),
        ),
        (
            rl.MaskedMaxPooling(l2_normalize=True, epsilon=1e-6),
            (np.ones((2, 3, 4), "float32"), np.ones((2, 3), "float32")),
        ),
        (rl.MaskedMeanPooling(), (np.ones((2, 3, 4), "float32"), np.ones((2, 3), "float32"))),
        (guards.NonFiniteGuard(), ([np.ones((2, 3, 4), "float32")], np.ones((2, 3), "float32"))),
        (rl.LengthMask(), (np.array([1, 2], "int32"), np.ones((2, 3, 1), "float32"))),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, keras.layers.Layer) else "",
)
def test_layer_config_round_trip(layer, inputs):
    expected = layer(*inputs)
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"].startswith("avalign>")
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()
    clone(*inputs)
    clone.set_weights(layer.get_weights())
    for got, want in zip(keras.tree.flatten(clone(*inputs)), keras.tree.flatten(expected)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: rl.ResDAVEnet(widths=[8, 8, 8]), r"widths must list 4 stage widths, got \[8, 8, 8\]"),
        (lambda: rl.ResDAVEnet(kernel_width=4), "kernel_width must be odd.*got 4"),
        (lambda: rl.ResDAVEnet(first_conv_channels=0), "first_conv_channels must be a positive integer, got 0"),
        (lambda: rl.ResidualBlock1D(8, stride=3), "stride must be 1 or 2, got 3"),
        (lambda: rl.GatedEmbeddingUnit(-1), "units must be a positive integer, got -1"),
        (lambda: rl.MaskedMaxPooling(epsilon=0.0), "epsilon must be > 0, got 0.0"),
    ],
)
def test_layer_arguments_are_validated(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_resdavenet_rejects_wrong_mel_bins():
    with pytest.raises(ValueError, match="expects 40 Mel bins.*80"):
        rl.ResDAVEnet(**TINY)(np.zeros((1, 32, 80), "float32"))
