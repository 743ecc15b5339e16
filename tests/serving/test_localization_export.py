"""The localizer's SavedModel: each signature against the in-memory model, JSON, warmup, versions, bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from avalign import audio as audio_lib
from avalign import features
from serving import export, export_base, rest_json, warmup
from trainer import train_lib
from trainer.localization import decoding

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def exported(malta_trained, tmp_path_factory):
    """(task, in-memory model, loaded export, version dir) of the session's MALTA job, exported by the CLI."""
    job, _ = malta_trained
    base = tmp_path_factory.mktemp("exports")
    assert export.main(["--job-dir", str(job), "--export-base", str(base), "--model-name", "loc"]) == 0
    path = str(base / "loc" / "1")
    task, model = train_lib.load_trained(str(job))
    return task, model, tf.saved_model.load(path), path


@pytest.fixture(scope="module")
def batch(exported):
    """Test records paired with their own first captions, and the training pipeline's inputs for them."""
    task, *_ = exported
    files = task.info.files(task.cfg.data.test_split)
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(3)]
    videos = [features.parse_example(r, task.info.storage_dtype, task.streams) for r in serialized]
    captions = [v[task.parser.caption_key][0].numpy() for v in videos]
    segments = [task.parser.video_segments(v) for v in videos]
    return {
        "serialized": np.array(serialized, object),
        "captions": np.array(captions, object),
        "videos": videos,
        "video": np.stack([s["video"].numpy() for s in segments]),
        "audio": np.stack([s["audio"].numpy() for s in segments]),
    }


def _in_memory(task, model, batch):
    n = len(batch["captions"])
    out = task.serving_model(model)(
        {
            "video": tf.constant(batch["video"]),
            "audio": tf.constant(batch["audio"]),
            "segment_mask": tf.ones([n, batch["video"].shape[1]]),
            "caption": tf.constant(batch["captions"]),
        },
        training=False,
    )
    return {k: np.asarray(v) for k, v in out.items()}


def _call(loaded, signature, **inputs):
    return {
        k: v.numpy() for k, v in loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()}).items()
    }


def test_serving_default_on_records_equals_the_in_memory_model(exported, batch):
    task, model, loaded, _ = exported
    want = _in_memory(task, model, batch)
    got = _call(loaded, "serving_default", examples=batch["serialized"], captions=batch["captions"])
    np.testing.assert_allclose(got["video_attention"], want["attention"][..., 0], atol=1e-5)
    np.testing.assert_allclose(got["audio_attention"], want["attention"][..., 1], atol=1e-5)
    spans = task.decode(want["span"], want["attention"])
    np.testing.assert_allclose(np.stack([got["start"], got["end"]], -1), spans, atol=1e-5)
    durations = np.array([float(v[features.DURATION]) for v in batch["videos"]], np.float32)
    np.testing.assert_allclose(got["duration"], durations)
    np.testing.assert_allclose(got["start_seconds"], spans[:, 0] * durations, rtol=1e-5, atol=1e-4)
    want_props, want_scores = decoding.top_k_proposals(
        want["attention"], 5, task.cfg.eval.attention_threshold, task.cfg.eval.nms_iou
    )
    np.testing.assert_allclose(got["proposals_seconds"], want_props.numpy() * durations[:, None, None], atol=1e-4)
    np.testing.assert_allclose(got["proposal_scores"], want_scores.numpy(), atol=1e-5)
    assert np.all(np.isfinite(got["score"])) and np.all((got["score"] >= 0) & (got["score"] <= 1 + 1e-6))


def test_localize_on_features_and_on_a_waveform_equal_the_records_path(exported, batch):
    task, _, loaded, _ = exported
    v = batch["videos"][0]
    common = {
        "captions": batch["captions"][:1],
        "video": batch["video"][:1],
        "segment_mask": np.ones([1, batch["video"].shape[1]], np.float32),
        "duration": np.array([float(v[features.DURATION])], np.float32),
    }
    by_record = _call(loaded, "serving_default", examples=batch["serialized"][:1], captions=batch["captions"][:1])
    by_frames = _call(loaded, "localize", log_mel=v[features.AUDIO].numpy()[None], **common)
    for key in ("start", "end", "video_attention", "audio_attention", "proposal_scores"):
        np.testing.assert_allclose(by_frames[key], by_record[key], atol=1e-5, err_msg=key)
    # A waveform goes through the one front-end in the graph.
    rng = np.random.default_rng(0)
    seconds = 3.0
    wave = (0.1 * rng.standard_normal(int(seconds * task.info.audio_config.sample_rate))).astype(np.float32)
    frames = audio_lib.log_mel(tf.constant(wave[None]), task.info.audio_config).numpy()
    common["duration"] = np.array([seconds], np.float32)
    by_wave = _call(loaded, "localize_waveform", waveform=wave[None], **common)
    by_mel = _call(loaded, "localize", log_mel=frames, **common)
    for key in ("start", "end", "video_attention", "audio_attention", "score"):
        np.testing.assert_allclose(by_wave[key], by_mel[key], atol=1e-5, err_msg=key)


@pytest.mark.parametrize("form", ["columnar", "row"])
def test_tf_serving_json_gives_the_signature_outputs(exported, batch, form):
    _, _, loaded, _ = exported
    want = _call(loaded, "serving_default", examples=batch["serialized"], captions=batch["captions"])
    body = rest_json.encode_request(
        {"examples": list(batch["serialized"]), "captions": list(batch["captions"])}, form=form
    )
    response = json.loads(json.dumps(rest_json.predict_json(loaded, json.loads(json.dumps(body)))))
    got = rest_json.decode_response(response, form)
    assert set(got) == set(want)
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-6, err_msg=key)


def test_only_core_ops(exported, core_ops_only):
    ops = core_ops_only(exported[3])
    assert "ParseExampleV2" in ops and "NonMaxSuppressionV3" in ops


def test_export_dir_holds_the_job_and_valid_warmup_requests(exported, malta_trained, tmp_path):
    task, _, loaded, path = exported
    extra = os.path.join(path, export_base.METADATA_DIR)
    assert sorted(os.listdir(extra)) == sorted(
        ["avalign.json", "config.yaml", "metrics.json", "schema.json", "vocabulary.txt", warmup.WARMUP_FILE]
    )
    meta = export_base.read_metadata(path)
    assert meta["metadata"]["task"] == "localization" and meta["metadata"]["model_name"] == "loc"
    assert set(meta["signatures"]) == {"serving_default", "localize", "localize_waveform"}
    assert meta["signatures"]["localize"]["inputs"]["video"]["shape"] == [None, 16, task.model_cfg.video_dim]
    with open(os.path.join(extra, "vocabulary.txt"), encoding="utf-8") as f:
        assert f.read().split("\n")[:-1] == task.vocabulary
    metrics = json.load(open(os.path.join(extra, "metrics.json")))
    assert metrics["monitor"] == task.monitor[0] and "best_epoch" in metrics and "test" in metrics["eval"]
    assert json.load(open(os.path.join(extra, "schema.json")))["config"]["decode_frame_rate"] > 0
    requests = warmup.read_requests(os.path.join(extra, warmup.WARMUP_FILE))
    assert 0 < len(requests) <= warmup.MAX_REQUESTS
    assert {sig for _, sig, _ in requests} == {"serving_default", "localize"}
    for name, signature, inputs in requests:
        assert name == "loc"
        out = _call(loaded, signature, **inputs)
        assert np.all(np.isfinite(out["score"]))
    # A second export is the next version; the first is left as it was.
    job, _ = malta_trained
    before = sorted(os.listdir(path))
    assert (
        export.main(
            [
                "--job-dir",
                str(job),
                "--export-base",
                os.path.dirname(os.path.dirname(path)),
                "--model-name",
                "loc",
                "--warmup-requests",
                "0",
            ]
        )
        == 0
    )
    second = os.path.join(os.path.dirname(path), "2")
    assert sorted(os.listdir(path)) == before
    assert not os.path.exists(os.path.join(second, export_base.METADATA_DIR, warmup.WARMUP_FILE))


def test_training_exported_the_localizer(malta_trained):
    job, out = malta_trained
    version = os.path.join(job, "export", "localizer", "1")
    assert out["export"] == [version]
    assert os.path.exists(os.path.join(version, export_base.METADATA_DIR, warmup.WARMUP_FILE))


def test_export_cli_refuses_bad_input(tmp_path, capsys):
    assert export.main(["--job-dir", str(tmp_path), "--export-base", str(tmp_path / "x")]) == 2
    assert "no finished training" in capsys.readouterr().err
    assert export.main(["--job-dir", str(tmp_path), "--export-base", str(tmp_path), "--model-name", "a/b"]) == 2
    assert export.main(["--job-dir", str(tmp_path), "--export-base", str(tmp_path), "--warmup-requests", "1001"]) == 2


@pytest.mark.parametrize(
    "change, named",
    [
        ({"captions": np.array([b"   "], object)}, "empty"),
        ({"captions": np.array(["ฉันชอบแมว".encode()], object)}, "no word the model knows"),
        ({"video": "nan"}, "video holds NaN or Inf"),
        ({"log_mel": "inf"}, "log_mel holds NaN or Inf"),
        ({"duration": np.array([0.0], np.float32)}, "duration must be > 0"),
        ({"log_mel": "empty"}, "log_mel has no frames"),
        ({"duration": np.array([5.0, 5.0], np.float32)}, "same batch size"),
    ],
)
def test_bad_input_is_refused_naming_it(exported, batch, change, named):
    _, _, loaded, _ = exported
    v = batch["videos"][0]
    inputs = {
        "captions": batch["captions"][:1],
        "video": batch["video"][:1].copy(),
        "log_mel": v[features.AUDIO].numpy()[None].copy(),
        "segment_mask": np.ones([1, batch["video"].shape[1]], np.float32),
        "duration": np.array([float(v[features.DURATION])], np.float32),
    }
    for key, value in change.items():
        if isinstance(value, str) and value in ("nan", "inf"):
            inputs[key][0, 0, 0] = np.nan if value == "nan" else np.inf
        elif isinstance(value, str):
            inputs[key] = inputs[key][:, :0]
        else:
            inputs[key] = value
    with pytest.raises(tf.errors.InvalidArgumentError, match=named):
        _call(loaded, "localize", **inputs)


def test_empty_waveform_is_refused(exported, batch):
    _, _, loaded, _ = exported
    with pytest.raises(tf.errors.InvalidArgumentError, match="waveform has no samples"):
        _call(
            loaded,
            "localize_waveform",
            captions=batch["captions"][:1],
            video=batch["video"][:1],
            waveform=np.zeros([1, 0], np.float32),
            segment_mask=np.ones([1, batch["video"].shape[1]], np.float32),
            duration=np.array([3.0], np.float32),
        )


def test_saved_model_cli_shows_and_runs_the_export(exported, tmp_path):
    task, _, _, path = exported
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    shown = subprocess.run(cli + ["show", "--dir", path, "--all"], capture_output=True, text=True, env=env, check=False)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for name in ("serving_default", "localize", "localize_waveform", "proposals_seconds"):
        assert name in shown.stdout
    m, dv = 16, task.model_cfg.video_dim
    word = task.vocabulary[0]
    arrays = {
        "video": np.zeros((1, m, dv), np.float32),
        "log_mel": np.zeros((1, 200, task.info.audio_config.num_mel_bins), np.float32),
        "segment_mask": np.ones((1, m), np.float32),
        "duration": np.array([2.0], np.float32),
    }
    for name, value in arrays.items():
        np.save(tmp_path / f"{name}.npy", value)
    run = subprocess.run(
        cli
        + ["run", "--dir", path, "--tag_set", "serve", "--signature_def", "localize"]
        + ["--inputs", ";".join(f"{name}={tmp_path / name}.npy" for name in arrays)]
        + ["--input_exprs", f"captions=[b'{word}']"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "start_seconds" in run.stdout
