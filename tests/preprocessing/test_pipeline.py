"""The Beam job end to end: good videos written, bad ones dead-lettered with their reason."""

import json
import shutil

import apache_beam as beam
import av
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing import test_pipeline as beam_testing
from apache_beam.testing.util import assert_that, equal_to

from avalign import features
from preprocessing import annotations, pipeline, transforms
from preprocessing.config import PreprocessConfig
from preprocessing.records import Caption, VideoAnnotation


def _records(out, split):
    files = sorted(tf.io.gfile.glob(str(out / split / "*.tfrecord.gz")))
    return [r.numpy() for f in files for r in tf.data.TFRecordDataset(f, compression_type="GZIP")]


def _write_silent_video(path, seconds=12.0, fps=10):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.full((120, 160, 3), 90, np.uint8)
            img[40:80, 10 + i : 50 + i] = (200, 30, 30)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def messy_corpus(tiny_corpus, tmp_path_factory):
    """The tiny corpus plus corrupt, truncated, empty, missing, audio-less and escaping entries."""
    root = tmp_path_factory.mktemp("messy") / "corpus"
    shutil.copytree(tiny_corpus, root)
    ann = json.loads((root / "annotations.json").read_text())
    splits = json.loads((root / "splits.json").read_text())
    good_id = splits["train"][0]
    template = dict(ann[good_id])
    videos = root / "videos"
    (videos / "bad_random.mp4").write_bytes(np.random.default_rng(0).bytes(50_000))
    data = (videos / f"{good_id}.mp4").read_bytes()
    (videos / "bad_truncated.mp4").write_bytes(data[: len(data) * 2 // 5])
    (videos / "bad_empty.mp4").write_bytes(b"")
    _write_silent_video(videos / "no_audio.mp4")
    (root.parent / "escape.mp4").write_bytes(data)
    past = dict(template, duration=200.0, timestamps=[[150.0, 160.0]])
    for key in ("sentences", "sentences_en", "audio_dependent", "steps"):
        past[key] = template[key][:1]
    for vid, entry in {
        "bad_random": template,
        "bad_truncated": template,
        "bad_empty": template,
        "bad_missing": template,
        "../../escape": template,
        "bad_past_media": past,
        "no_audio": dict(
            template,
            duration=12.0,
            timestamps=[[1.0, 5.0]],
            sentences=["Slide the red square."],
            sentences_en=["Slide the red square."],
            audio_dependent=[0],
        ),
    }.items():
        if vid == "bad_past_media":
            shutil.copy(videos / f"{good_id}.mp4", videos / "bad_past_media.mp4")
        if vid == "no_audio":
            entry = {k: v for k, v in entry.items() if k not in ("steps", "narration")}
            entry["steps"] = [{"object": "solid red square", "action": "slide"}]
        ann[vid] = entry
        splits["train"].append(vid)
    # A caption the reader itself refuses (end before start) on a good video.
    ann[good_id] = dict(ann[good_id], timestamps=ann[good_id]["timestamps"] + [[5.0, 2.0]])
    for key in ("sentences", "sentences_en", "audio_dependent"):
        ann[good_id][key] = ann[good_id][key] + ann[good_id][key][-1:]
    ann[good_id]["steps"] = ann[good_id]["steps"] + ann[good_id]["steps"][-1:]
    (root / "annotations.json").write_text(json.dumps(ann))
    (root / "splits.json").write_text(json.dumps(splits))
    return root


@pytest.fixture(scope="module")
def messy_run(messy_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("messy_records")
    argv = ["--annotations", str(messy_corpus), "--format", "builtin", "--videos_dir", str(messy_corpus)]
    argv += ["--output_dir", str(out), "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
    counters = pipeline.run(argv)
    return out, counters


def test_dead_letter_names_exactly_the_bad_inputs(messy_run, tiny_corpus):
    out, counters = messy_run
    rows = [json.loads(line) for line in (out / "deadletter" / "rejected.jsonl").read_text().splitlines()]
    by_input = {}
    for r in rows:
        assert r["reason"], r
        by_input.setdefault(r["stage"], []).append(r["input"])
    flat = " ".join(f"{s}:{i}" for s, inputs in by_input.items() for i in inputs)
    for bad in ("bad_random", "bad_truncated", "bad_empty"):
        assert any(bad in i for i in by_input["DecodeVideo"]), (bad, flat)
    assert any("bad_missing" in i for i in by_input["ResolveMedia"]), flat
    assert any("escape" in i for i in by_input["ResolveMedia"]), flat
    assert any("bad_past_media" in i for i in by_input["CheckCaptions"]), flat
    assert len(by_input["ReadAnnotations"]) == 1  # the end-before-start caption
    # Exactly the bad ones: 3 undecodable, 2 unresolvable, 1 caption past the media
    # (+1 'no usable caption left' for that video), 1 refused by the reader.
    assert len(rows) == 8, flat
    good = json.loads((tiny_corpus / "annotations.json").read_text())
    assert counters["videos_written"] == len(good) + 1  # every good video + the audio-less one
    assert counters["videos_without_audio"] == 1


def test_records_decode_to_expected_shapes(messy_run):
    out, _ = messy_run
    meta = features.read_metadata(str(out))
    assert meta["audio"] == {"feature": features.AUDIO, "dim": 40, "rate": 100.0}
    assert set(meta["visual"]) == {"visual_2d", "visual_3d"}
    total = 0
    for split in ("train", "val", "test"):
        records = _records(out, split)
        assert len(records) == meta["counts"][split]
        total += len(records)
        for raw in records:
            p = features.parse_example(tf.constant(raw), meta["storage_dtype"])
            duration = float(p[features.DURATION])
            assert (
                p[features.AUDIO].shape == (int(duration * 100) + 1, 40)
                or abs(p[features.AUDIO].shape[0] - duration * 100) <= 2
            )
            for stream, info in meta["visual"].items():
                m = p[features.stream_keys(stream)["features"]]
                assert m.shape[1] == info["dim"]
                assert m.shape[0] == int(np.ceil(duration * info["rate"] - 1e-6))
                assert np.all(np.isfinite(m.numpy()))
            n = len(p[features.CAPTION_TEXT])
            assert n and len(p[features.CAPTION_START]) == n == len(p[features.CAPTION_TEXT_EN])
            assert np.all(p[features.CAPTION_END].numpy() <= duration + 1e-3)
            if p[features.VIDEO_ID].numpy() == b"no_audio":
                assert int(p[features.AUDIO_PRESENT]) == 0
                assert float(tf.reduce_max(p[features.AUDIO])) < -50  # stored silence, in dB
    assert total == sum(meta["counts"].values())


def test_output_is_deterministic(tiny_corpus, tiny_records, tmp_path):
    argv = ["--annotations", str(tiny_corpus), "--format", "builtin", "--videos_dir", str(tiny_corpus)]
    pipeline.run(argv + ["--output_dir", str(tmp_path), "--set", "num_shards=2"])
    for split in ("train", "val", "test"):
        assert _records(tmp_path, split) == _records(tiny_records, split)


def test_extract_fn_with_test_pipeline(tiny_corpus):
    """ExtractFeatures on its own: one good video out, one missing file dead-lettered."""
    good = next(a for a in annotations.read_annotations("builtin", str(tiny_corpus)) if isinstance(a, VideoAnnotation))
    missing = VideoAnnotation("nope", 10.0, (Caption(1.0, 2.0, "x"),), split="train", source="test")
    with beam_testing.TestPipeline() as p:
        out = (
            p
            | beam.Create([good, missing])
            | beam.ParDo(transforms.ExtractFeaturesFn(PreprocessConfig(), str(tiny_corpus))).with_outputs(
                transforms.REJECTED, main="records"
            )
        )
        assert_that(out.records | beam.Map(lambda r: (r[0], r[1])), equal_to([(good.split, good.video_id)]))
        assert_that(
            out[transforms.REJECTED] | beam.Map(lambda r: (r.input, r.stage)),
            equal_to([("nope", "ResolveMedia")]),
            label="CheckRejected",
        )


def test_unknown_flag_is_an_error_but_beam_options_pass(capsys):
    with pytest.raises(SystemExit):
        pipeline.parse_args(
            ["--annotations", "a", "--format", "builtin", "--videos_dir", "v", "--output_dir", "o", "--shards", "3"]
        )
    assert "--shards" in capsys.readouterr().err
    args, rest = pipeline.parse_args(
        [
            "--annotations",
            "a",
            "--format",
            "builtin",
            "--videos_dir",
            "v",
            "--output_dir",
            "o",
            "--runner",
            "DirectRunner",
            "--direct_num_workers=2",
            "--temp_location",
            "/tmp/x",
        ]
    )
    assert args.format == "builtin" and rest == [
        "--runner",
        "DirectRunner",
        "--direct_num_workers=2",
        "--temp_location",
        "/tmp/x",
    ]


def test_bad_config_key_stops_before_any_work(tiny_corpus, tmp_path):
    out = tmp_path / "out"
    argv = ["--annotations", str(tiny_corpus), "--format", "builtin", "--videos_dir", str(tiny_corpus)]
    assert pipeline.main(argv + ["--output_dir", str(out), "--set", "audio.num_mel_binz=64"]) == 2
    assert not out.exists()


def test_missing_reader_argument_stops_before_any_work(tmp_path, real_annotation_files):
    _, root = real_annotation_files
    argv = ["--annotations", str(root / "charades_sta_test.txt"), "--format", "charades_sta"]
    argv += ["--videos_dir", str(tmp_path), "--output_dir", str(tmp_path / "out")]
    assert pipeline.main(argv) == 2  # no --durations / --split
    assert not (tmp_path / "out").exists()


class _TinyYamnet(tf.Module):
    """YAMNet-shaped: 0.96 s windows every 0.48 s -> (scores, embeddings)."""

    def __init__(self, dim=6):
        super().__init__()
        self.projection = tf.Variable(np.random.default_rng(0).standard_normal((15360, dim)).astype(np.float32) * 0.01)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def __call__(self, waveform):
        frames = tf.signal.frame(waveform, 15360, 7680, pad_end=True)
        embeddings = tf.matmul(frames, self.projection)
        return tf.nn.softmax(embeddings), embeddings


def test_hub_audio_embedding_stream_end_to_end(tiny_corpus, tmp_path):
    """A frozen hub audio model's embeddings are stored as a stream and feed the trainer."""
    from trainer import train_lib
    from trainer.config import load_experiment

    handle = str(tmp_path / "yamnet")
    tf.saved_model.save(_TinyYamnet(), handle)
    out = tmp_path / "records"
    argv = ["--annotations", str(tiny_corpus), "--format", "builtin", "--videos_dir", str(tiny_corpus)]
    argv += [
        "--output_dir",
        str(out),
        "--set",
        f"audio_embedding.handle={handle}",
        "--set",
        "audio_embedding.output_key=1",
    ]
    pipeline.run(argv)
    meta = features.read_metadata(str(out))
    assert meta["streams"][features.AUDIO_EMBEDDING] == {"dim": 6, "rate": pytest.approx(1 / 0.48)}
    raw = _records(out, "train")[0]
    p = features.parse_example(tf.constant(raw), meta["storage_dtype"], streams=features.STREAMS)
    emb = p[features.stream_keys(features.AUDIO_EMBEDDING)["features"]]
    duration = float(p[features.DURATION])
    assert emb.shape[1] == 6 and abs(emb.shape[0] - duration / 0.48) <= 2, (emb.shape, duration)
    assert p[features.stream_keys(features.AUDIO_EMBEDDING)["extractor"]].numpy().decode().startswith("hub:")
    cfg = load_experiment("configs/malta_demo.yaml",
        [f"data.records_dir={out}", "data.audio_feature=hub", "train.epochs=1", "train.warmup_epochs=0",
         "train.global_batch_size=8",
         "model.num_segments=8", "model.video_hidden=8", "model.audio_hidden=8",
         "model.text_hidden=8", "model.attention_units=8", "model.embedding_dim=8"],
    )  # fmt: skip
    result = train_lib.run_experiment(cfg, str(tmp_path / "job"))
    assert result["task"].model_cfg.audio_dim == 6 and "all" in result["eval"]
    # Its export serves records (they hold the embeddings); features from a new video would need
    # the hub model at serving time, so there is no `localize`, and the predictor says why.
    from serving import predict

    (version,) = result["export"]
    served = tf.saved_model.load(version).signatures
    assert set(served) == {"serving_default"}
    caption = p[features.CAPTION_TEXT_EN][0]
    out = served["serving_default"](examples=tf.constant([raw]), captions=tf.reshape(caption, [1]))
    assert 0 <= float(out["start_seconds"][0]) <= float(out["end_seconds"][0]) <= duration + 1e-3
    with pytest.raises(predict.PredictError, match="no 'localize' signature"):
        predict.Localizer.load(version)


def test_pre_extracted_npy_features_replace_a_stream(tiny_corpus, tmp_path):
    """C3D/I3D-style per-video .npy features stand in for the 2D stream; a missing file is dead-lettered."""
    ann = json.loads((tiny_corpus / "annotations.json").read_text())
    ids = sorted(ann)
    feats_dir = tmp_path / "c3d"
    feats_dir.mkdir()
    for vid in ids[1:]:  # the first video has no feature file
        n = int(np.ceil(ann[vid]["duration"])) + 1  # 1 vector per second
        np.save(feats_dir / f"{vid}.npy", np.random.default_rng(0).normal(size=(n, 7)).astype(np.float32))
    out = tmp_path / "records"
    argv = ["--annotations", str(tiny_corpus), "--format", "builtin", "--videos_dir", str(tiny_corpus)]
    argv += ["--output_dir", str(out), "--set", "imported_2d.kind=npy", "--set", f"imported_2d.path={feats_dir}"]
    counters = pipeline.run(argv + ["--set", "imported_2d.rate=1.0"])
    assert counters["videos_written"] == len(ids) - 1
    rows = [json.loads(line) for line in (out / "deadletter" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["input"].endswith(f"{ids[0]}.mp4"), r["stage"]) for r in rows] == [(True, "ExtractFeatures")]
    assert ids[0] in rows[0]["reason"]
    meta = features.read_metadata(str(out))
    assert meta["visual"]["visual_2d"] == {"dim": 7, "rate": 2.0}  # resampled to the stream's rate
    p = features.parse_example(tf.constant(_records(out, "train")[0]), meta["storage_dtype"])
    assert p[features.stream_keys("visual_2d")["extractor"]].numpy().decode().startswith("imported:npy:")
