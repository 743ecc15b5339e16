"""AVLnet model: shapes, save/load, paper-size step, NaN guard, audio encoder, learning, MirroredStrategy."""

import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.input import RecordsError
from trainer.retrieval.config import RetrievalModelConfig
from trainer.retrieval.losses import mms_loss
from trainer.retrieval.metrics import both_directions
from trainer.retrieval.model import AVLnet, audio_encoder_model, build_model
from trainer.retrieval.task import RetrievalMetricsCallback, embed

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = dict(audio_widths=[8, 8, 16, 16], first_conv_channels=8, embedding_dim=16, visual_2d_dim=12, visual_3d_dim=6)


def _inputs(cfg, batch=4, frames=80, visual_steps=3, seed=0):
    rng = np.random.default_rng(seed)
    x = {
        "audio": rng.normal(size=(batch, frames, cfg.num_mel_bins)).astype("float32"),
        "audio_length": rng.integers(frames // 2, frames + 1, size=batch).astype("int32"),
        "audio_present": np.ones(batch, "float32"),
        "visual_2d": rng.normal(size=(batch, visual_steps, cfg.visual_2d_dim)).astype("float32"),
        "visual_mask": np.ones((batch, visual_steps), "float32"),
    }
    if cfg.use_3d:
        x["visual_3d"] = rng.normal(size=(batch, visual_steps, cfg.visual_3d_dim)).astype("float32")
    return x


def _numpy(outputs):
    return {k: np.asarray(v) for k, v in outputs.items()}


def test_outputs_shapes_and_validity():
    cfg = RetrievalModelConfig(**SMALL)
    model = build_model(cfg)
    x = _inputs(cfg)
    x["audio_present"][1] = 0.0
    x["audio_length"][2] = 0
    x["visual_mask"][3] = 0.0
    out = _numpy(model(x))
    assert set(out) == {"audio_embedding", "video_embedding", "valid"}
    assert out["audio_embedding"].shape == (4, 16) and out["video_embedding"].shape == (4, 16)
    np.testing.assert_array_equal(out["valid"], [1, 0, 0, 0])
    assert set(model.input) == {"audio", "audio_length", "audio_present", "visual_2d", "visual_3d", "visual_mask"}


def test_image_mode_takes_2d_only_and_freezes_the_visual_unit():
    cfg = RetrievalModelConfig(**SMALL, use_3d=False, freeze_visual=True)
    model = build_model(cfg)
    assert "visual_3d" not in model.input
    x = _inputs(cfg, visual_steps=1)
    frozen = [w.numpy().copy() for w in model.get_layer("video_gated_unit").weights]
    audio_before = model.get_layer("audio_projection").kernel.numpy().copy()
    model.compile(optimizer=keras.optimizers.SGD(0.5), run_eagerly=True)
    model.train_on_batch(x)
    for before, after in zip(frozen, model.get_layer("video_gated_unit").weights):
        np.testing.assert_array_equal(before, after.numpy())
    assert not np.array_equal(audio_before, model.get_layer("audio_projection").kernel.numpy())


def test_save_load_gives_same_outputs(tmp_path):
    cfg = RetrievalModelConfig(**SMALL, adaptive_margin=True)
    model = build_model(cfg)
    x = _inputs(cfg)
    rng = np.random.default_rng(1)
    for weight in model.non_trainable_weights:  # batch-norm statistics away from their initial values
        weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype("float32"))
    path = str(tmp_path / "avlnet.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, AVLnet)
    assert loaded.retrieval_config == cfg
    want, got = _numpy(model(x)), _numpy(loaded(x))
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)
    encoder = audio_encoder_model(loaded)
    enc = _numpy(encoder({"audio": x["audio"], "audio_length": x["audio_length"]}))
    np.testing.assert_allclose(enc["pooled_embedding"], want["audio_embedding"], rtol=1e-5, atol=1e-6)


def test_paper_size_model_trains_one_step_on_1024_frames():
    cfg = RetrievalModelConfig()
    assert cfg.audio_widths == [128, 256, 512, 1024] and cfg.embedding_dim == 4096
    model = build_model(cfg)
    x = _inputs(cfg, batch=4, frames=1024, visual_steps=2)
    x["audio_length"][:] = [1024, 1000, 517, 16]
    model.compile(optimizer=keras.optimizers.Adam(1e-4), run_eagerly=True)
    kernel = model.get_layer("resdavenet").blocks[-1].kernel2
    before = kernel.numpy()[0, :4, :4].copy()
    loss = model.train_on_batch(x)
    assert np.isfinite(loss) and loss > 0.0
    assert not np.array_equal(before, kernel.numpy()[0, :4, :4])
    enc = _numpy(audio_encoder_model(model)({"audio": x["audio"][:2], "audio_length": x["audio_length"][:2]}))
    assert enc["frame_embeddings"].shape == (2, 64, 1024)
    np.testing.assert_array_equal(enc["frame_mask"].sum(axis=1), [64, math.ceil(1000 / 16)])
    assert enc["pooled_embedding"].shape == (2, 4096)


def _loss_and_grads(model, x):
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = model.compute_loss(x=x, y_pred=out)
    return out, loss, tape.gradient(loss, model.trainable_weights)


def test_nan_in_a_valid_input_drops_the_clip_not_the_training():
    cfg = RetrievalModelConfig(**SMALL)
    model = build_model(cfg)
    x = _inputs(cfg, batch=5)
    x["audio"][1, 3, 7] = np.nan
    x["visual_3d"][3, 0, 2] = np.inf
    x["audio"][0, x["audio_length"][0] :] = np.nan  # padding: harmless
    keep = [0, 2, 4]
    clean = {k: v[keep] for k, v in x.items()}

    # What the first layers receive: the guards' outputs hold no NaN/Inf at all.
    guards = keras.Model(model.input, [model.get_layer("audio_guard").output, model.get_layer("visual_guard").output])
    for value in tf.nest.flatten(guards(x, training=True)):
        assert np.all(np.isfinite(value.numpy()))

    out, loss, grads = _loss_and_grads(model, x)
    np.testing.assert_array_equal(out["valid"].numpy(), [1, 0, 1, 0, 1])
    assert np.isfinite(float(loss)) and float(loss) > 0.0
    for key in ("audio_embedding", "video_embedding"):
        assert np.all(np.isfinite(out[key].numpy()))
    expected = mms_loss(out["audio_embedding"].numpy()[keep], out["video_embedding"].numpy()[keep], margin=cfg.margin)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)

    # The dropped clips change nothing: loss, gradients (batch statistics included)
    # and the updated weights are those of the batch without them.
    clean_out, clean_loss, clean_grads = _loss_and_grads(model, clean)
    assert float(loss) == pytest.approx(float(clean_loss), rel=1e-5)
    for key in ("audio_embedding", "video_embedding"):
        np.testing.assert_allclose(out[key].numpy()[keep], clean_out[key].numpy(), rtol=1e-4, atol=1e-5)
    for weight, got, want in zip(model.trainable_weights, grads, clean_grads):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-3, atol=1e-5, err_msg=weight.path)

    initial = model.get_weights()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.train_on_batch(x)
    stepped = model.get_weights()
    model.set_weights(initial)
    model.train_on_batch(clean)
    for weight, got, want in zip(model.weights, stepped, model.get_weights()):  # moving statistics too
        assert np.all(np.isfinite(got)), weight.path
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5, err_msg=weight.path)


ONEDNN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, tensorflow as tf
    from trainer.retrieval.config import RetrievalModelConfig
    from trainer.retrieval.model import build_model

    cfg = RetrievalModelConfig(**json.loads(sys.argv[1]))
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch in (1, 3, 5, 7):
        x = {
            "audio": rng.normal(size=(batch, 80, 40)).astype("float32"),
            "audio_length": np.full(batch, 80, "int32"),
            "audio_present": np.ones(batch, "float32"),
            "visual_2d": rng.normal(size=(batch, 2, cfg.visual_2d_dim)).astype("float32"),
            "visual_3d": rng.normal(size=(batch, 2, cfg.visual_3d_dim)).astype("float32"),
            "visual_mask": np.ones((batch, 2), "float32"),
        }
        # One more clip, dropped (audio_present 0): the gradients must not change.
        padded = {k: np.concatenate([v, np.zeros_like(v[:1])]) for k, v in x.items()}
        padded["audio_length"][-1] = 80
        grads = []
        for inputs in (x, padded):
            with tf.GradientTape() as tape:
                out = model(inputs, training=True)
                loss = model.compute_loss(x=inputs, y_pred=out)
            grads.append([g.numpy() for g in tape.gradient(loss, model.trainable_weights)])
        for got, want in zip(*grads):
            assert np.all(np.isfinite(got))
            worst = max(worst, float(np.max(np.abs(got - want))))
    print(json.dumps({"worst_grad_diff": worst}))
    """
)


@pytest.mark.e2e
def test_narrow_strided_shortcuts_train_at_any_batch_size_with_onednn():
    # oneDNN's strided 1x1 backward-weights kernel writes past its workspace when a
    # convolution has fewer input channels than its channel block (16 with AVX-512,
    # 8 with AVX2), aborting the process at some batch sizes with finite inputs.
    # ResDAVEnet's shortcuts and a width-1 kernel must never reach it. A subprocess,
    # with oneDNN explicitly on, so that a crash fails this test, not the session.
    import json

    narrow = dict(
        audio_widths=[4, 4, 8, 8],
        first_conv_channels=4,
        kernel_width=1,
        embedding_dim=8,
        visual_2d_dim=6,
        visual_3d_dim=3,
    )
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="1")
    proc = subprocess.run(
        [sys.executable, "-c", ONEDNN_SCRIPT, json.dumps(narrow)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["worst_grad_diff"] < 1e-4


def test_embed_keeps_the_usable_clips_with_their_metadata():
    cfg = RetrievalModelConfig(**SMALL)
    model = build_model(cfg)
    x = _inputs(cfg)
    x["audio_present"][1] = 0.0
    x["visual_mask"][3] = 0.0
    meta = {"video_id": [b"a", b"b", b"c", b"d"], "language": [b"en"] * 4}
    meta.update(start=np.arange(4, dtype="float32"), end=np.arange(4, dtype="float32") + 5.0)
    want = _numpy(model(x, training=False))
    audio, video, kept = embed(model, tf.data.Dataset.from_tensor_slices((x, meta)).batch(3))
    np.testing.assert_array_equal(kept["video_id"], [b"a", b"c"])
    np.testing.assert_array_equal(kept["start"], [0.0, 2.0])
    np.testing.assert_allclose(audio, want["audio_embedding"][[0, 2]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(video, want["video_embedding"][[0, 2]], rtol=1e-5, atol=1e-6)
    x["audio_present"][:] = 0.0
    with pytest.raises(RecordsError, match="None of the 4 clips is usable"):
        embed(model, tf.data.Dataset.from_tensor_slices((x, meta)).batch(3))
    with pytest.raises(RecordsError, match="No clips to embed"):
        embed(model, tf.data.Dataset.from_tensor_slices((x, meta)).take(0).batch(3))


def test_compute_loss_refuses_labels():
    cfg = RetrievalModelConfig(**SMALL)
    model = build_model(cfg)
    x = _inputs(cfg)
    with pytest.raises(ValueError, match="without labels or sample weights"):
        model.compute_loss(x=x, y=np.zeros(4), y_pred=model(x))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("audio_widths", [8, 8], "audio_widths must be 4 positive integers"),
        ("audio_widths", [8, 8, 0, 16], r"audio_widths\[2\] must be an integer in \[1, inf\), got 0"),
        ("kernel_width", 8, "kernel_width must be odd.*got 8"),
        ("embedding_dim", 0, r"embedding_dim must be an integer in \[1, inf\), got 0"),
        ("embedding_dim", 16.0, r"embedding_dim must be an integer in \[1, inf\), got 16.0"),
        ("margin", -1.0, r"margin must be a finite number in \[0, inf\), got -1.0"),
        ("margin", float("nan"), r"margin must be a finite number in \[0, inf\), got nan"),
        ("max_audio_frames", 8, r"max_audio_frames must be an integer in \[16, inf\).*total stride.*got 8"),
        ("adaptive_margin_scale", 2.0, r"adaptive_margin_scale must be a finite number in \[0, 1\], got 2.0"),
    ],
)
def test_config_validation(field, value, message):
    with pytest.raises(ValueError, match=message):
        RetrievalModelConfig(**{field: value})


def test_feature_sizes_from_the_records_must_be_filled_in_before_building():
    cfg = RetrievalModelConfig(**{**SMALL, "visual_3d_dim": 0})
    with pytest.raises(ValueError, match=r"\['visual_3d_dim'\] are 0"):
        build_model(cfg)
    build_model(RetrievalModelConfig(**{**SMALL, "visual_3d_dim": 0, "use_3d": False}))
    with pytest.raises(ValueError, match=r"visual_2d_dim must be an integer in \[0, inf\).*records.*got -3"):
        RetrievalModelConfig(visual_2d_dim=-3)


def _paired_data(rng, maps, num, frames=64, visual_steps=4):
    """Clips whose spectral profile and visual features are noisy linear views of one latent."""
    z = rng.normal(size=(num, maps["audio"].shape[0]))
    lengths = rng.integers(frames // 2, frames + 1, size=num).astype("int32")
    audio = (z @ maps["audio"])[:, None, :] + 0.5 * rng.normal(size=(num, frames, 40))
    audio[np.arange(frames)[None, :] >= lengths[:, None]] = 0.0
    v2 = (z @ maps["2d"])[:, None, :] + 0.3 * rng.normal(size=(num, visual_steps, 24))
    v3 = (z @ maps["3d"])[:, None, :] + 0.3 * rng.normal(size=(num, visual_steps, 12))
    return {
        "audio": audio.astype("float32"),
        "audio_length": lengths,
        "audio_present": np.ones(num, "float32"),
        "visual_2d": v2.astype("float32"),
        "visual_3d": v3.astype("float32"),
        "visual_mask": np.ones((num, visual_steps), "float32"),
    }


@pytest.mark.e2e
def test_small_model_learns_paired_data_beyond_chance(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    maps = {"audio": rng.normal(size=(6, 40)), "2d": rng.normal(size=(6, 24)), "3d": rng.normal(size=(6, 12))}
    train, val = _paired_data(rng, maps, 1024), _paired_data(rng, maps, 128)
    cfg = RetrievalModelConfig(
        audio_widths=[16, 16, 32, 32], first_conv_channels=16, embedding_dim=32, visual_2d_dim=24, visual_3d_dim=12
    )
    model = build_model(cfg)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    # Slots made now, not inside the first trace of the train step (which would then be traced twice).
    model.optimizer.build(model.trainable_variables)
    train_ds = tf.data.Dataset.from_tensor_slices(train).shuffle(1024, seed=0).batch(32, drop_remainder=True).repeat()
    # Validation clips as the task's evaluation takes them: (features, meta) batches.
    meta = {"video_id": [f"v{i}".encode() for i in range(128)], "language": [b"en"] * 128}
    meta.update(start=np.zeros(128, "float32"), end=np.full(128, 10.0, "float32"))
    val_ds = tf.data.Dataset.from_tensor_slices((val, meta)).batch(64)
    audio, video, _ = embed(model, val_ds)
    before = both_directions(audio, video)
    callback = RetrievalMetricsCallback(val_ds, str(tmp_path), block_size=4096)
    history = model.fit(train_ds, steps_per_epoch=60, epochs=1, verbose=0, shuffle=False, callbacks=[callback]).history
    chance = 1 / 128
    assert history["val_a2v_num_queries"] == [128] and history["val_v2a_num_queries"] == [128]
    assert history["loss"][0] < 2 * math.log(32)
    assert before["a2v"]["r1"] < 4 * chance
    assert history["val_a2v_r1"][0] > 8 * chance and history["val_v2a_r1"][0] > 8 * chance
    assert history["val_a2v_median_rank"][0] < 16 < before["a2v"]["median_rank"]


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from trainer.retrieval.config import RetrievalModelConfig
    from trainer.retrieval.losses import mms_loss
    from trainer.retrieval.model import build_model

    cfg = RetrievalModelConfig(**json.loads(sys.argv[1]))
    rng = np.random.default_rng(0)
    x = {
        "audio": rng.normal(size=(8, 48, 40)).astype("float32"),
        "audio_length": np.array([48, 40, 33, 20, 48, 17, 30, 45], "int32"),
        "audio_present": np.array([1, 1, 1, 1, 1, 0, 1, 1], "float32"),
        "visual_2d": rng.normal(size=(8, 2, 12)).astype("float32"),
        "visual_3d": rng.normal(size=(8, 2, 6)).astype("float32"),
        "visual_mask": np.ones((8, 2), "float32"),
    }
    keras.utils.set_random_seed(0)
    reference = build_model(cfg)
    weights = reference.get_weights()
    halves = [{k: v[:4] for k, v in x.items()}, {k: v[4:] for k, v in x.items()}]
    with tf.GradientTape() as tape:
        losses = []
        for half in halves:  # batch norm statistics are per replica too
            out = reference(half, training=True)
            losses.append(mms_loss(out["audio_embedding"], out["video_embedding"], audio_present=out["valid"]))
        expected_loss = (losses[0] + losses[1]) / 2
    grads = tape.gradient(expected_loss, reference.trainable_weights)
    lr = 0.1
    expected = {v.path: v.numpy() - lr * g.numpy() for v, g in zip(reference.trainable_weights, grads)}

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = build_model(cfg)
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(lr))
    history = model.fit(tf.data.Dataset.from_tensors(x), epochs=1, verbose=0, shuffle=False).history
    worst = max(float(np.max(np.abs(v.numpy() - expected[v.path]))) for v in model.trainable_weights)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "loss": history["loss"][0],
                      "expected_loss": float(expected_loss), "worst_weight_diff": worst}))
    """
)


@pytest.mark.e2e
def test_mirrored_strategy_loss_and_gradients_are_the_mean_over_replicas():
    import json

    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, json.dumps(SMALL)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["loss"] == pytest.approx(result["expected_loss"], rel=1e-4)
    assert result["worst_weight_diff"] < 1e-5
