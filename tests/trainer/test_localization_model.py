"""The localization config, model variants, raw-text input, save/load, SavedModel export and a paper-size step."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from avalign import hyperparams
from trainer.localization import losses, metrics, model, text
from trainer.localization.config import LocalizationModelConfig

VOCABULARY = ["cut", "the", "bottle", "बाटली", "कापा", "切", "る"]
CAPTIONS = ["Cut the bottle.", "बाटली कापा।", "紙を切る", ""]


def small_config(**overrides) -> LocalizationModelConfig:
    values = dict(
        num_segments=6,
        video_dim=5,
        audio_dim=3,
        video_hidden=4,
        audio_hidden=3,
        text_hidden=4,
        attention_units=4,
        regression_hidden=3,
        embedding_dim=4,
        vocab_size=16,
        max_caption_tokens=5,
        dropout=0.1,
    )
    values.update(overrides)
    return LocalizationModelConfig(**values)


def batch(cfg, seed=0):
    rng = np.random.default_rng(seed)
    n = len(CAPTIONS)
    mask = np.ones((n, cfg.num_segments), "float32")
    mask[1, cfg.num_segments // 2 :] = 0.0
    mask[3] = 0.0  # A caption with no segment and no token must not give NaN.
    return {
        "video": tf.constant(rng.normal(size=(n, cfg.num_segments, cfg.video_dim)).astype("float32")),
        "audio": tf.constant(rng.normal(size=(n, cfg.num_segments, cfg.audio_dim)).astype("float32")),
        "segment_mask": tf.constant(mask),
        "caption": tf.constant(CAPTIONS),
    }


def text_model(cfg, vocabulary=VOCABULARY, **kwargs):
    """(the model behind its tokenizer, raw captions in; the token-id model inside it)."""
    core = model.build_model(cfg, vocabulary, **kwargs)
    return model.with_text_input(core, model.caption_tokenizer(cfg, vocabulary)), core


def test_config_defaults_are_the_paper_sizes_and_load_through_hyperparams():
    cfg = LocalizationModelConfig()
    assert (cfg.num_segments, cfg.video_dim, cfg.audio_dim, cfg.video_hidden) == (128, 4096, 128, 256)
    assert (cfg.span_loss_weight, cfg.calibration_loss_weight) == (1.0, 5.0)
    loaded = hyperparams.from_dict(LocalizationModelConfig, {"modalities": "v", "num_segments": 32})
    assert dataclasses.replace(cfg, modalities="v", num_segments=32) == loaded
    with pytest.raises(hyperparams.ConfigError, match="modalitys.*modalities"):
        hyperparams.from_dict(LocalizationModelConfig, {"modalitys": "v"})


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_segments", 0),
        ("video_dim", -3),
        ("vocab_size", 2),
        ("modalities", "va"),
        ("head", "boundary"),
        ("dropout", 1.0),
        ("span_loss_weight", -1.0),
        ("fasttext_path", " "),
    ],
)
def test_config_rejects_bad_values_naming_them(field, value):
    with pytest.raises(ValueError, match=f"{field}.*{value!r}" if field != "vocab_size" else "vocab_size.*2"):
        LocalizationModelConfig(**{field: value})


@pytest.mark.parametrize("modalities", ["av", "v", "a"])
@pytest.mark.parametrize("head", ["attention_regression", "feature_regression"])
def test_variants_build_and_run(modalities, head):
    cfg = small_config(modalities=modalities, head=head)
    net, core = text_model(cfg)
    assert sorted(net.input) == ["audio", "caption", "segment_mask", "video"]
    assert sorted(core.input) == ["audio", "segment_mask", "tokens", "video"]
    inputs = batch(cfg)
    out = net(inputs)
    assert sorted(out) == ["attention", "span"]
    span, attention = out["span"].numpy(), out["attention"].numpy()
    assert span.shape == (4, 2) and attention.shape == (4, cfg.num_segments, 2)
    assert np.all(np.isfinite(span)) and np.all(np.isfinite(attention))
    assert np.all((0.0 <= span) & (span[:, :1] <= span[:, 1:]) & (span <= 1.0))
    np.testing.assert_allclose(attention[:3].sum(axis=1), np.ones((3, 2)), rtol=1e-5)
    np.testing.assert_array_equal(attention[1, cfg.num_segments // 2 :], 0.0)
    # The branch a variant lacks is ignored: changing it changes nothing.
    unused = {"v": "audio", "a": "video"}.get(modalities)
    if unused:
        changed = dict(inputs, **{unused: inputs[unused] * 3.0 + 1.0})
        np.testing.assert_array_equal(net(changed)["span"], span)
    else:
        for key in ("video", "audio"):
            changed = dict(inputs, **{key: inputs[key] * 3.0 + 1.0})
            assert not np.allclose(net(changed)["attention"], attention)


def test_mixed_precision_keeps_attention_and_span_in_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        net, core = text_model(small_config())
        out = net(batch(small_config()))
    finally:
        keras.config.set_dtype_policy(previous)
    assert core.get_layer("video_encoder").compute_dtype == "float16"
    assert core.get_layer("co_attention").compute_dtype == "float32"
    for key in ("span", "attention"):
        assert out[key].dtype == tf.float32
        assert np.all(np.isfinite(out[key].numpy()))


def _outputs_and_grads(m, x):
    with tf.GradientTape() as tape:
        out = m(x, training=True)
        loss = tf.reduce_sum(out["span"]) + tf.reduce_sum(out["attention"] * tf.range(6, dtype="float32")[:, None])
    grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, m.trainable_weights)]
    return {k: v.numpy() for k, v in out.items()}, grads


@pytest.mark.parametrize("modalities", ["av", "v"])
def test_nan_and_inf_never_reach_a_kernel(modalities):
    cfg = small_config(dropout=0.0, modalities=modalities)
    m, _ = text_model(cfg)
    x = {k: v.numpy().copy() for k, v in batch(cfg).items()}
    want, want_grads = _outputs_and_grads(m, x)

    # Padding may hold anything: outputs and gradients do not change at all.
    padded = {k: v.copy() for k, v in x.items()}
    padded["video"][1, -1, 0] = np.nan
    padded["audio"][1, -2, 1] = np.inf
    padded["video"][3, 0, 0] = np.nan  # the caption without segments
    got, got_grads = _outputs_and_grads(m, padded)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_array_equal(g, w)

    # NaN in a real segment: that caption keeps no segment; the others are untouched.
    bad = {k: v.copy() for k, v in x.items()}
    bad["video"][0, 2, 1] = np.nan
    bad["audio"][2, 0, 0] = np.nan  # a stream that "v" ignores: dropped only by "av"
    got, got_grads = _outputs_and_grads(m, bad)
    dropped = [0, 2] if modalities == "av" else [0]
    kept = [i for i in range(4) if i not in dropped]
    assert all(np.all(np.isfinite(g)) for g in got_grads)
    assert np.all(np.isfinite(got["span"]))
    np.testing.assert_array_equal(got["attention"][dropped], 0.0)
    np.testing.assert_allclose(got["attention"][kept], want["attention"][kept], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["span"][kept], want["span"][kept], rtol=1e-6, atol=1e-7)


def test_save_load_and_saved_model_export_give_the_same_outputs(tmp_path):
    cfg = small_config()
    embeddings = np.random.default_rng(1).normal(size=(len(VOCABULARY) + 2, cfg.embedding_dim)).astype("float32")
    net, core = text_model(cfg, embedding_matrix=embeddings)
    np.testing.assert_array_equal(core.get_layer("caption_encoder").embedding.embeddings.numpy(), embeddings)
    inputs = batch(cfg)
    expected = net(inputs)

    path = str(tmp_path / "malta.keras")
    net.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("tokenizer").vocabulary == VOCABULARY
    for key in ("span", "attention"):
        np.testing.assert_allclose(loaded(inputs)[key], expected[key], rtol=1e-6, atol=1e-7)

    export_dir = str(tmp_path / "export" / "1")
    net.export(export_dir, format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(export_dir).signatures["serving_default"](**inputs)
    for key in ("span", "attention"):
        np.testing.assert_allclose(served[key], expected[key], rtol=1e-6, atol=1e-7)


def test_text_input_is_the_tokenized_batch_through_the_token_model():
    cfg = small_config(dropout=0.0)
    net, core = text_model(cfg)
    inputs = batch(cfg)
    tokenizer = model.caption_tokenizer(cfg, VOCABULARY)
    tokens = model.tokenize_inputs(inputs, tokenizer)
    assert sorted(tokens) == ["audio", "segment_mask", "tokens", "video"]
    # "Cut the bottle." -> cut, the, bottle; "紙を切る" -> 紙 (OOV), を (OOV), 切, る; "" -> padding.
    np.testing.assert_array_equal(tokens["tokens"].numpy()[[0, 2, 3]], [[2, 3, 4, 0, 0], [1, 1, 7, 8, 0], [0] * 5])
    want = core(tokens)
    got = net(inputs)
    for key in ("span", "attention"):
        np.testing.assert_array_equal(got[key], want[key])


def test_embeddings_from_the_configured_fasttext_file(tmp_path):
    path = tmp_path / "cc.mr.vec"
    path.write_text("2 4\nबाटली 1 2 3 4\ncut 5 6 7 8\n", encoding="utf-8")
    _, core = text_model(small_config(fasttext_path=str(path)))
    embeddings = core.get_layer("caption_encoder").embedding.embeddings.numpy()
    np.testing.assert_array_equal(embeddings[2 + VOCABULARY.index("बाटली")], [1, 2, 3, 4])
    np.testing.assert_array_equal(embeddings[2 + VOCABULARY.index("cut")], [5, 6, 7, 8])
    np.testing.assert_array_equal(embeddings[text.PAD_ID], 0.0)


def test_vocabulary_larger_than_vocab_size_is_rejected():
    with pytest.raises(ValueError, match="7 words.*vocab_size=8.*at most 6"):
        model.build_model(small_config(vocab_size=8), VOCABULARY)


def test_compile_arguments():
    args = model.compile_arguments(small_config(modalities="v", span_loss_weight=2.0))
    assert args["loss_weights"] == {"span": 2.0, "attention": 5.0}
    assert isinstance(args["loss"]["span"], losses.SpanSmoothL1)
    assert args["loss"]["attention"].modalities == "v"
    assert [m.name for m in args["metrics"]["span"]] == ["r1_iou_0.1", "r1_iou_0.3", "r1_iou_0.5", "r1_iou_0.7", "miou"]
    assert isinstance(args["metrics"]["span"][-1], metrics.MeanIoU)


def test_paper_size_model_trains_one_step():
    """M=128, C3D 4096-d video, VGGish 128-d audio, 256-unit BiLSTMs, batch 20.

    Run eagerly: tracing the three BiLSTMs' training graph costs more CPU time
    than the step itself; graph-mode training is covered by the learning test.
    """
    cfg = LocalizationModelConfig(num_segments=128, video_dim=4096, audio_dim=128, video_hidden=256, text_hidden=256)
    net, core = text_model(cfg, [f"w{i}" for i in range(500)])
    net.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True, **model.compile_arguments(cfg))
    rng = np.random.default_rng(0)
    batch_size = 20
    mask = np.ones((batch_size, 128), "float32")
    mask[::2, 100:] = 0.0
    span = np.sort(rng.uniform(size=(batch_size, 2)), axis=1).astype("float32")
    inputs = {
        "video": tf.constant(rng.normal(size=(batch_size, 128, 4096)).astype("float32")),
        "audio": tf.constant(rng.normal(size=(batch_size, 128, 128)).astype("float32")),
        "segment_mask": tf.constant(mask),
        "caption": tf.constant([f"w{i} w{i + 1} unknown" for i in range(batch_size)]),
    }
    labels = {"span": tf.constant(span), "attention": losses.calibration_targets(span, mask)}
    before = core.get_layer("video_encoder").fuse.kernel.numpy()
    logs = net.train_on_batch(inputs, labels, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert logs["loss"] == pytest.approx(logs["span_loss"] + 5.0 * logs["attention_loss"], rel=1e-4)
    assert {"span_r1_iou_0.5", "span_miou"} <= set(logs)
    assert not np.array_equal(before, core.get_layer("video_encoder").fuse.kernel.numpy())
