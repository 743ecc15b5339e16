"""The audio-encoder export: hub-loadable, the in-memory outputs, the trainer's hook, core ops only."""

import dataclasses
import types

import numpy as np
import pytest
import tensorflow as tf

from avalign import audio, hyperparams
from avalign.audio import AudioConfig
from serving import audio_encoder, export_base
from trainer.retrieval.config import RetrievalConfig, RetrievalModelConfig
from trainer.retrieval.model import audio_encoder_model, build_model

SMALL = dict(audio_widths=[8, 8, 16, 16], first_conv_channels=8, embedding_dim=12, visual_2d_dim=12, visual_3d_dim=6)


@pytest.fixture(scope="module")
def avlnet():
    model = build_model(RetrievalModelConfig(**SMALL))
    rng = np.random.default_rng(0)
    model(
        {
            "audio": rng.normal(size=(2, 32, 40)).astype("float32"),
            "audio_length": np.array([32, 20], "int32"),
            "audio_present": np.ones(2, "float32"),
            "visual_2d": rng.normal(size=(2, 2, 12)).astype("float32"),
            "visual_3d": rng.normal(size=(2, 2, 6)).astype("float32"),
            "visual_mask": np.ones((2, 2), "float32"),
        }
    )
    return model


@pytest.fixture(scope="module")
def exported(avlnet, tmp_path_factory):
    base = tmp_path_factory.mktemp("export") / "audio_encoder"
    return audio_encoder.export_audio_encoder(avlnet, AudioConfig(), str(base))


def test_the_loaded_encoder_gives_the_in_memory_outputs(avlnet, exported):
    import tensorflow_hub as hub

    wave = np.random.default_rng(1).normal(scale=0.1, size=(2, 8000)).astype("float32")
    log_mel = audio.log_mel(tf.constant(wave))
    lengths = tf.constant([log_mel.shape[1], 30], tf.int32)
    want = audio_encoder_model(avlnet)({"audio": log_mel, "audio_length": lengths}, training=False)
    for loaded in (tf.saved_model.load(exported), hub.load(exported)):
        assert (int(loaded.sample_rate.numpy()), float(loaded.frame_rate.numpy())) == (16000, 100.0)
        assert int(loaded.total_stride.numpy()) == 16
        got = loaded.embed_log_mel(log_mel, lengths)
        for key in ("frame_embeddings", "frame_mask", "pooled_embedding"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5)
        # The waveform paths run the front-end in-graph: all frames of equal-length waves are valid.
        batch = loaded.embed_waveforms(tf.constant(wave))
        full = audio_encoder_model(avlnet)(
            {"audio": log_mel, "audio_length": tf.fill([2], log_mel.shape[1])}, training=False
        )
        np.testing.assert_allclose(batch["pooled_embedding"], full["pooled_embedding"], rtol=1e-4, atol=1e-5)
        single = loaded(tf.constant(wave[1]))
        assert set(single) == {"frame_embeddings", "pooled_embedding"}
        assert single["frame_embeddings"].shape == (int(np.ceil(log_mel.shape[1] / 16)), 16)
        np.testing.assert_allclose(single["pooled_embedding"], full["pooled_embedding"][1], rtol=1e-4, atol=1e-5)


def test_signatures_for_tf_serving(exported):
    loaded = tf.saved_model.load(exported)
    assert set(loaded.signatures) == {"serving_default", "embed_log_mel"}
    meta = export_base.read_metadata(exported)
    assert meta["model"] == "avlnet_audio_encoder"
    assert meta["params"]["total_stride"] == 16 and meta["params"]["audio"]["num_mel_bins"] == 40
    assert {k: sorted(s["inputs"]) for k, s in meta["signatures"].items()} == {
        "serving_default": ["waveforms"],
        "embed_log_mel": ["lengths", "log_mel"],
    }
    for signature in meta["signatures"].values():
        assert sorted(signature["outputs"]) == ["frame_embeddings", "frame_mask", "pooled_embedding"]


def test_every_op_in_the_export_is_a_core_tf_op(exported, core_ops_only):
    # The in-graph front-end (RFFT) too: TF Serving runs no tensorflow_io op.
    assert {"RFFT", "MatMul", "Conv2D"} <= set(core_ops_only(exported))


def test_export_after_training_writes_the_next_version_with_the_job(avlnet, tmp_path):
    cfg = RetrievalConfig()
    # What the hook reads of a prepared RetrievalTask.
    task = types.SimpleNamespace(
        name="retrieval", cfg=cfg, job_dir=str(tmp_path), info=types.SimpleNamespace(audio_config=AudioConfig())
    )
    export_root = tmp_path / "export"
    first = audio_encoder.export_after_training(task, avlnet, str(export_root))
    assert first == [str(export_root / "audio_encoder" / "1")]
    assert audio_encoder.export_after_training(task, avlnet, str(export_root)) == [
        str(export_root / "audio_encoder" / "2")
    ]
    meta = export_base.read_metadata(first[0])["metadata"]
    assert meta["task"] == "retrieval" and meta["job_dir"] == str(tmp_path)
    assert meta["config"]["task"] == "retrieval"
    assert meta["config_sha256"] == hyperparams.digest(cfg)
    other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, embedding_dim=7))
    assert hyperparams.digest(other) != meta["config_sha256"]
