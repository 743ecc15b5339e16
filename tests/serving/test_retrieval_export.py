"""The retrieval export: every signature gives the in-memory model's outputs, rejects bad input, uses core ops only."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from avalign import audio, features
from avalign.audio import AudioConfig
from serving import export_base, retrieval
from trainer import train_lib
from trainer.retrieval import data
from trainer.retrieval import model as model_lib
from trainer.retrieval.config import RetrievalModelConfig

TOL = dict(rtol=1e-4, atol=1e-5)
SIGNATURES = {"serving_default", "embed_audio", "embed_audio_log_mel", "embed_video", "score"}


@pytest.fixture(scope="module")
def trained(avlnet_trained, tmp_path_factory):
    """(task, model) of a module-own copy of the session's AVLnet job (one export per module, not per test)."""
    job = tmp_path_factory.mktemp("retrieval_export") / "job"
    shutil.copytree(avlnet_trained[0], job)
    return train_lib.load_trained(str(job))


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    task, model = trained
    base = tmp_path_factory.mktemp("retrieval_export_base") / "retrieval"
    return export_base.export(retrieval.RetrievalModule.from_task(task, model), str(base), metadata={"task": task.name})


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported).signatures


@pytest.fixture(scope="module")
def test_batch(trained):
    """A batch of the task's own test clips and the full model's outputs on it, usable clips only."""
    task, model = trained
    x = next(iter(task.dataset(task.cfg.data.test_split, is_training=False, batch_size=8)))
    out = model(x, training=False)
    keep = np.asarray(out[model_lib.VALID]) > 0
    assert keep.sum() >= 2
    return {k: np.asarray(v)[keep] for k, v in x.items()}, {k: np.asarray(v)[keep] for k, v in out.items()}


def _visual(task, x):
    return {s: x[s] for s in task.streams} | {"visual_mask": x["visual_mask"]}


def _full_model_audio(task, model, log_mel, lengths):
    """The full AVLnet's audio embeddings, with one finite visual step per clip (the video branch is apart)."""
    batch = log_mel.shape[0]
    x = {"audio": log_mel, "audio_length": lengths, "audio_present": np.ones(batch, "float32")}
    x |= {s: np.ones((batch, 1, task.info.stream_dims[s]), "float32") for s in task.streams}
    x["visual_mask"] = np.ones((batch, 1), "float32")
    return model(x, training=False)[model_lib.AUDIO_EMBEDDING]


def test_embed_audio_runs_the_front_end_and_gives_the_in_memory_embeddings(trained, loaded):
    task, model = trained
    wave = np.random.default_rng(1).normal(scale=0.1, size=(3, 12000)).astype("float32")
    log_mel = audio.log_mel(tf.constant(wave), task.info.audio_config).numpy()
    frames = log_mel.shape[1]
    got = loaded["embed_audio"](waveform=tf.constant(wave))
    want = _full_model_audio(task, model, log_mel, np.full(3, frames, "int32"))
    np.testing.assert_allclose(got["audio_embedding"], want, **TOL)
    frames_out = -(-frames // 16)
    assert got["frame_embeddings"].shape == (3, frames_out, model.retrieval_config.audio_widths[-1])
    np.testing.assert_array_equal(got["frame_mask"], np.ones((3, frames_out)))


def test_embed_audio_log_mel_gives_the_in_memory_embeddings(trained, loaded, test_batch):
    task, model = trained
    x, want = test_batch
    got = loaded["embed_audio_log_mel"](log_mel=tf.constant(x["audio"]), audio_length=tf.constant(x["audio_length"]))
    np.testing.assert_allclose(got["audio_embedding"], want["audio_embedding"], **TOL)
    encoder = model_lib.audio_encoder_model(model)({"audio": x["audio"], "audio_length": x["audio_length"]})
    np.testing.assert_allclose(got["frame_embeddings"], encoder["frame_embeddings"], **TOL)
    np.testing.assert_array_equal(got["frame_mask"], encoder["frame_mask"])
    # Padding after audio_length is ignored, whatever it holds.
    padded = x["audio"].copy()
    padded[0, x["audio_length"][0] :] = 1e3
    again = loaded["embed_audio_log_mel"](log_mel=tf.constant(padded), audio_length=tf.constant(x["audio_length"]))
    np.testing.assert_allclose(again["audio_embedding"], want["audio_embedding"], **TOL)


def test_embed_video_gives_the_in_memory_embeddings(trained, loaded, test_batch):
    task, _ = trained
    x, want = test_batch
    got = loaded["embed_video"](**{k: tf.constant(v) for k, v in _visual(task, x).items()})
    assert set(got) == {"video_embedding"}
    np.testing.assert_allclose(got["video_embedding"], want["video_embedding"], **TOL)


def test_score_is_the_dot_product_the_metrics_rank_by(loaded, test_batch):
    _, want = test_batch
    a, v = want["audio_embedding"], want["video_embedding"]
    got = loaded["score"](audio_embedding=tf.constant(a[:3]), video_embedding=tf.constant(v))["similarity"]
    assert got.shape == (3, len(v))
    np.testing.assert_allclose(got, a[:3] @ v.T, **TOL)


def test_serving_default_embeds_every_clip_of_the_records_as_the_task_does(trained, loaded):
    task, model = trained
    split = task.cfg.data.test_split
    records = [r.numpy() for f in task.info.files(split) for r in tf.data.TFRecordDataset(f, compression_type="GZIP")]
    got = {k: v.numpy() for k, v in loaded["serving_default"](examples=tf.constant(records)).items()}
    want_a, want_v, meta = task.embed_split(model, split)
    usable = got["valid"] > 0
    assert usable.sum() == len(want_a)
    # Records in file order here, interleaved in the task's reader: match clips by (video, start).
    order = {(vid, round(float(s), 4)): i for i, (vid, s) in enumerate(zip(meta["video_id"], meta["start"]))}
    index = [order[(vid, round(float(s), 4))] for vid, s in zip(got["video_id"][usable], got["start"][usable])]
    np.testing.assert_allclose(got["audio_embedding"][usable], want_a[index], **TOL)
    np.testing.assert_allclose(got["video_embedding"][usable], want_v[index], **TOL)
    np.testing.assert_allclose(got["end"][usable], meta["end"][index])


def test_no_records_or_no_videos_give_empty_answers(trained, loaded):
    task, model = trained
    emb = model.retrieval_config.embedding_dim
    got = loaded["serving_default"](examples=tf.constant([], tf.string))
    assert got["audio_embedding"].shape == got["video_embedding"].shape == (0, emb)
    assert got["video_id"].shape == got["valid"].shape == (0,)
    visual = {s: tf.zeros((0, 3, task.info.stream_dims[s])) for s in task.streams}
    assert loaded["embed_video"](**visual, visual_mask=tf.zeros((0, 3)))["video_embedding"].shape == (0, emb)


def _bad_inputs(task):
    """(signature, inputs, words the error must hold) for each kind of bad input."""
    bins = task.info.audio_dim
    d2 = task.info.stream_dims["visual_2d"]
    wave = np.zeros((2, 4000), "float32")
    nan_wave = wave.copy()
    nan_wave[1, 7] = np.nan
    log_mel = np.zeros((2, 40, bins), "float32")
    inf_log_mel = log_mel.copy()
    inf_log_mel[0, 3, 0] = np.inf
    visual = {s: np.zeros((2, 3, task.info.stream_dims[s]), "float32") for s in task.streams}
    mask = np.ones((2, 3), "float32")
    nan_visual = {k: v.copy() for k, v in visual.items()}
    nan_visual["visual_2d"][1, 0, 0] = np.nan
    lengths = np.array([40, 20], "int32")
    emb = np.zeros((2, task.model_cfg.embedding_dim), "float32")
    return [
        ("embed_audio", {"waveform": wave[0]}, "waveform"),
        ("embed_audio", {"waveform": np.zeros((2, 0), "float32")}, "waveform has 0 samples"),
        ("embed_audio", {"waveform": nan_wave}, "waveform holds NaN or Inf"),
        ("embed_audio", {"waveform": wave[:0]}, "waveform holds no clip"),
        ("embed_audio_log_mel", {"log_mel": log_mel[:0], "audio_length": lengths[:0]}, "log_mel holds no clip"),
        ("embed_audio", {"waveform": wave.astype("float64")}, "float"),
        ("embed_audio_log_mel", {"log_mel": log_mel[..., :-1], "audio_length": lengths}, "log_mel"),
        ("embed_audio_log_mel", {"log_mel": inf_log_mel, "audio_length": lengths}, "log_mel holds NaN or Inf"),
        ("embed_audio_log_mel", {"log_mel": log_mel, "audio_length": np.array([40, 0], "int32")}, "audio_length"),
        ("embed_audio_log_mel", {"log_mel": log_mel, "audio_length": np.array([41, 1], "int32")}, "audio_length"),
        ("embed_audio_log_mel", {"log_mel": log_mel, "audio_length": lengths[:1]}, "audio_length"),
        ("embed_video", {**visual, "visual_mask": mask[0]}, "visual_mask"),
        ("embed_video", {**visual, "visual_mask": np.array([[1, 1, 1], [0, 0, 0]], "float32")}, "visual_mask"),
        ("embed_video", {**visual, "visual_mask": mask * 0.5}, "visual_mask"),
        ("embed_video", {**nan_visual, "visual_mask": mask}, "visual_2d holds NaN or Inf"),
        ("embed_video", {**visual, "visual_2d": np.zeros((2, 3, d2 + 1), "float32"), "visual_mask": mask}, "visual_2d"),
        ("score", {"audio_embedding": emb * np.nan, "video_embedding": emb}, "audio_embedding holds NaN or Inf"),
        ("score", {"audio_embedding": emb, "video_embedding": emb[:, :-1]}, "video_embedding"),
        ("serving_default", {"examples": np.array([[b"x"]])}, "examples"),
        ("serving_default", {"examples": np.array([b"not a record"])}, "parse"),
    ]


def test_bad_input_is_an_invalid_argument_error_that_names_it(trained, loaded):
    task, _ = trained
    for signature, inputs, words in _bad_inputs(task):
        with pytest.raises(tf.errors.InvalidArgumentError, match=words):
            loaded[signature](**{k: tf.constant(v) for k, v in inputs.items()})


def test_signatures_and_metadata(trained, exported):
    task, model = trained
    meta = export_base.read_metadata(exported)
    assert meta["model"] == model.name and meta["metadata"] == {"task": "retrieval"}
    inputs = {k: sorted(s["inputs"]) for k, s in meta["signatures"].items()}
    assert inputs == {
        "serving_default": ["examples"],
        "embed_audio": ["waveform"],
        "embed_audio_log_mel": ["audio_length", "log_mel"],
        "embed_video": sorted([*task.streams, "visual_mask"]),
        "score": ["audio_embedding", "video_embedding"],
    }
    outputs = {k: sorted(s["outputs"]) for k, s in meta["signatures"].items()}
    assert outputs["serving_default"] == ["audio_embedding", "end", "start", "valid", "video_embedding", "video_id"]
    assert (
        outputs["embed_audio"]
        == outputs["embed_audio_log_mel"]
        == [
            "audio_embedding",
            "frame_embeddings",
            "frame_mask",
        ]
    )
    assert outputs["embed_video"] == ["video_embedding"] and outputs["score"] == ["similarity"]
    emb = model.retrieval_config.embedding_dim
    assert meta["signatures"]["embed_audio"]["outputs"]["audio_embedding"]["shape"] == [None, emb]
    assert meta["signatures"]["score"]["outputs"]["similarity"]["shape"] == [None, None]
    assert meta["params"]["audio"]["sample_rate"] == int(tf.saved_model.load(exported).sample_rate.numpy())


def test_every_op_in_the_export_is_a_core_tf_op(exported, core_ops_only):
    assert {"RFFT", "Conv2D", "ParseExampleV2", "ReduceDataset"} <= set(core_ops_only(exported))


def test_saved_model_cli_lists_the_signatures(exported):
    done = subprocess.run(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--dir", exported, "--all"],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for signature in SIGNATURES:
        assert f"signature_def['{signature}']" in done.stdout


def test_the_image_mode_model_serves_2d_features_only(tmp_path):
    # AVLnet on images with spoken captions (`model.use_3d: false`): no visual_3d input anywhere.
    cfg = RetrievalModelConfig(
        audio_widths=[4, 4, 8, 8], first_conv_channels=4, embedding_dim=6, visual_2d_dim=5, use_3d=False
    )
    model = model_lib.build_model(cfg)
    parser = data.ClipParser(64, 100.0, ("visual_2d",), {"visual_2d": 1.0}, images=True)
    dims = {features.AUDIO: cfg.num_mel_bins, "visual_2d": 5}
    module = retrieval.RetrievalModule(model, AudioConfig(), parser, "float16", dims)
    loaded = tf.saved_model.load(export_base.export(module, str(tmp_path))).signatures
    rng = np.random.default_rng(2)
    x = {
        "audio": rng.normal(size=(2, 32, cfg.num_mel_bins)).astype("float32"),
        "audio_length": np.array([32, 20], "int32"),
        "audio_present": np.ones(2, "float32"),
        "visual_2d": rng.normal(size=(2, 1, 5)).astype("float32"),
        "visual_mask": np.ones((2, 1), "float32"),
    }
    want = model(x, training=False)
    video = loaded["embed_video"](visual_2d=tf.constant(x["visual_2d"]), visual_mask=tf.constant(x["visual_mask"]))
    np.testing.assert_allclose(video["video_embedding"], want["video_embedding"], **TOL)
    got = loaded["embed_audio_log_mel"](log_mel=tf.constant(x["audio"]), audio_length=tf.constant(x["audio_length"]))
    np.testing.assert_allclose(got["audio_embedding"], want["audio_embedding"], **TOL)
    inputs = export_base.read_metadata(str(tmp_path / "1"))["signatures"]["embed_video"]["inputs"]
    assert sorted(inputs) == ["visual_2d", "visual_mask"]


def test_records_that_do_not_fit_the_model_are_refused(trained):
    task, model = trained
    parser = data.ClipParser(64, 100.0, ("visual_2d",), {"visual_2d": 1.0})
    with pytest.raises(ValueError, match="export the model with the task that trained it"):
        retrieval.RetrievalModule(model, task.info.audio_config, parser, "float16", {features.AUDIO: 40})


def test_training_exported_the_retriever_with_warmup_requests_that_run(avlnet_trained):
    from serving import warmup

    job, out = avlnet_trained
    retriever = os.path.join(str(job), "export", "retriever", "1")
    assert out["export"] == [retriever, os.path.join(str(job), "export", "audio_encoder", "1")]
    meta = export_base.read_metadata(retriever)
    assert meta["metadata"]["task"] == "retrieval" and meta["metadata"]["model_name"] == "retriever"
    requests = warmup.read_requests(os.path.join(retriever, export_base.METADATA_DIR, warmup.WARMUP_FILE))
    assert {sig for _, sig, _ in requests} == {"serving_default", "embed_audio", "embed_video", "score"}
    served = tf.saved_model.load(retriever)
    for name, signature, inputs in requests:
        assert name == "retriever"
        out = served.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        assert all(np.all(np.isfinite(v.numpy())) for v in out.values() if v.dtype.is_floating)
