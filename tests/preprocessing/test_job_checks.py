"""The Beam job's checks: a bad input stops it before any work, or is dead-lettered with a reason that names it."""

import json
import logging

import av
import numpy as np
import pytest
import soundfile
import tensorflow as tf

from avalign import features
from preprocessing import annotations, pipeline, transforms
from preprocessing.config import ImportedFeaturesConfig, PreprocessConfig, VisualConfig, VisualStreamConfig
from preprocessing.records import Caption, Rejected, VideoAnnotation

SECONDS = 2.0
CAPTION = [0.2, 1.5]


def _write_activitynet(path, video_ids):
    """ActivityNet Captions JSON: one caption in [0.2, 1.5] s of a 2 s video per id."""
    data = {vid: {"duration": SECONDS, "timestamps": [CAPTION], "sentences": [f"step of {vid}"]} for vid in video_ids}
    path.write_text(json.dumps(data))
    return path


def _write_media(path, video=True, audio=True, fps=8, rate=16000):
    """A 2 s mp4: a square sliding over grey (mpeg4) and/or a 440 Hz tone (AAC)."""
    with av.open(str(path), "w") as out:
        if video:
            vstream = out.add_stream("mpeg4", rate=fps)
            vstream.width, vstream.height, vstream.pix_fmt = 64, 48, "yuv420p"
        if audio:
            astream = out.add_stream("aac", rate=rate)
            astream.layout = "mono"
        if video:
            for i in range(int(SECONDS * fps)):
                image = np.full((48, 64, 3), 90, np.uint8)
                image[16:32, 2 * i : 2 * i + 16] = (200, 30, 30)
                out.mux(vstream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            out.mux(vstream.encode())
        if audio:
            tone = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(int(SECONDS * rate)) / rate)).astype(np.float32)
            for start in range(0, tone.size, 1024):
                frame = av.AudioFrame.from_ndarray(
                    tone[None, start : start + 1024].copy(), format="fltp", layout="mono"
                )
                frame.sample_rate = rate
                frame.pts = start
                out.mux(astream.encode(frame))
            out.mux(astream.encode())
    return path


def _argv(annotation_file, videos_dir, output_dir, fmt="activitynet", split="train"):
    argv = ["--annotations", str(annotation_file), "--format", fmt, "--videos_dir", str(videos_dir)]
    argv += ["--output_dir", str(output_dir)]
    return argv + (["--split", split] if split else [])


@pytest.fixture()
def one_video(tmp_path):
    """An annotation file of one video and a videos dir holding it (nothing is decoded by these tests)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "v1.mp4").write_bytes(b"not decoded: the job stops before")
    return _write_activitynet(tmp_path / "captions.json", ["v1"]), videos


# --------------------------------------------------------------------------------------
# 14. Pre-flight: videos dir, output dir, annotations read with the wrong format.


@pytest.mark.parametrize("kind, message", [("missing", "does not exist"), ("file", "is a file, not a directory")])
def test_bad_videos_dir_stops_before_any_work(one_video, tmp_path, capsys, kind, message):
    annotation_file, _ = one_video
    videos_dir = tmp_path / "nowhere"
    if kind == "file":
        videos_dir.write_text("x")
    out = tmp_path / "out"
    assert pipeline.main(_argv(annotation_file, videos_dir, out)) == 2
    err = capsys.readouterr().err
    assert f"error: --videos_dir {videos_dir} {message}" in err
    assert not out.exists()


@pytest.mark.parametrize("layout", ["parent_is_a_file", "dir_is_a_file"])
def test_unwritable_output_dir_stops_with_its_name(one_video, tmp_path, capsys, layout):
    annotation_file, videos = one_video
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory must go")
    out = blocker / "out" if layout == "parent_is_a_file" else blocker
    assert pipeline.main(_argv(annotation_file, videos, out)) == 2
    err = capsys.readouterr().err
    assert f"error: --output_dir {out}: cannot create it or write a file in it (" in err
    assert "Traceback" not in err
    assert blocker.read_text() == "a file where a directory must go"


def test_output_dir_check_creates_it_and_leaves_no_probe(tmp_path):
    out = tmp_path / "a" / "b"
    pipeline.check_output_dir(str(out))
    assert out.is_dir() and list(out.iterdir()) == []


@pytest.mark.parametrize(
    "file, fmt, looks_like, first_reason",
    [
        ("activitynet_captions_val_1.json", "howto100m", "activitynet", "malformed: entry lacks ['start', 'end'"),
        ("charades_sta_test.txt", "qvhighlights", "charades_sta", "malformed: not JSON"),
    ],
    ids=["activitynet_as_howto100m", "charades_sta_as_qvhighlights"],
)
def test_wrong_format_stops_naming_file_format_and_reasons(
    real_annotations, tmp_path, capsys, caplog, file, fmt, looks_like, first_reason
):
    path = real_annotations / file
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert pipeline.main(_argv(path, tmp_path, out, fmt=fmt, split="val")) == 2
    # One error, not a warning per refused entry before it.
    assert not [r for r in caplog.records if "rejected" in r.getMessage()]
    err = capsys.readouterr().err
    assert f"error: {path} read as format {fmt!r} gives no video: every entry was refused (" in err
    assert f"the first: {first_reason}" in err
    assert f"It looks like format {looks_like!r}." in err
    assert not out.exists()


def test_file_unreadable_as_the_format_names_both(real_annotations, tmp_path, capsys):
    path = real_annotations / "activitynet_captions_val_1.json"
    assert pipeline.main(_argv(path, tmp_path, tmp_path / "out", fmt="youcook2", split=None)) == 2
    err = capsys.readouterr().err
    assert f"error: {path} cannot be read as format 'youcook2': " in err
    assert "needs a top-level 'database' key" in err and "It looks like format 'activitynet'." in err


def test_corpus_dir_given_with_a_file_format_says_what_it_is(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "annotations.json").write_text("{}")
    assert pipeline.main(_argv(corpus, tmp_path, tmp_path / "out", fmt="activitynet")) == 2
    err = capsys.readouterr().err
    assert (
        f"error: ActivityNet Captions annotations {str(corpus)!r}: no such file. It looks like format 'builtin'." in err
    )


def test_empty_annotation_file_stops(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("{}")
    with pytest.raises(
        ValueError, match=r"empty\.json read as format 'activitynet' gives no video: it holds no entries"
    ):
        annotations.check_annotations("activitynet", str(path), split="train")


def test_files_with_some_refused_entries_pass_the_check(real_annotations, tmp_path):
    # The real files have lines the job dead-letters; they must still run.
    real = real_annotations
    annotations.check_annotations(
        "charades_sta",
        str(real / "charades_sta_test.txt"),
        durations=str(real / "charades_test_durations.csv"),
        split="test",
    )
    annotations.check_annotations("activitynet", str(real / "activitynet_captions_val_1.json"), split="val")
    # A first entry refused, a second one good: the check reads on to the good one.
    mixed = {"v_bad": {"duration": 10.0, "timestamps": [[5.0, 2.0]], "sentences": ["backwards"]}}
    mixed["v_good"] = {"duration": 10.0, "timestamps": [[1.0, 2.0]], "sentences": ["fine"]}
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(mixed))
    stats = annotations.ReadStats()
    annotations.check_annotations("activitynet", str(path), split="train", stats=stats)
    assert stats.videos == 1 and dict(stats.rejected) == {"end_before_start": 1, "all_captions_rejected": 1}


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("a.txt", "3MSZA 24.3 30.4##person turn a light on.\n", "charades_sta"),
        ("a.json", '{"v_1": {"duration": 5.0, "timestamps": [[0, 1]], "sentences": ["x"]}}', "activitynet"),
        ("a.json", '{"database": {"v": {"duration": 5.0, "subset": "training", "annotations": []}}}', "youcook2"),
        ("a.jsonl", '{"qid": 1, "query": "x", "duration": 150, "vid": "v", "relevant_windows": [[0, 2]]}\n', "qvhighlights"),
        ("a.json", '{"v": {"start": [0.0], "end": [1.0], "text": ["hi"]}}', "howto100m"),
        ("a.csv", "id,length\nv,5.0\n", None),
    ],
    ids=["charades_sta", "activitynet", "youcook2", "qvhighlights", "howto100m", "durations_csv"],
)  # fmt: skip
def test_guess_format(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    assert annotations.guess_format(str(path)) == expected


def test_guess_format_of_a_builtin_corpus_dir(tmp_path):
    assert annotations.guess_format(str(tmp_path)) is None
    (tmp_path / "annotations.json").write_text("{}")
    assert annotations.guess_format(str(tmp_path)) == "builtin"


# --------------------------------------------------------------------------------------
# 16. Audio-only inputs: rejected with a reason when a stream needs frames, else written.


@pytest.fixture(scope="module")
def audio_only_inputs(tmp_path_factory):
    """A videos dir with a good video, an audio-only mp4 (AAC) and a wav, and their annotations."""
    root = tmp_path_factory.mktemp("audio_only")
    videos = root / "videos"
    videos.mkdir()
    _write_media(videos / "good.mp4")
    _write_media(videos / "voice.mp4", video=False)
    t = np.arange(int(SECONDS * 16000)) / 16000
    soundfile.write(videos / "speech.wav", 0.3 * np.sin(2 * np.pi * 300.0 * t), 16000)
    return _write_activitynet(root / "captions.json", ["good", "voice", "speech"]), videos


def test_audio_only_inputs_are_dead_lettered_and_the_job_goes_on(audio_only_inputs, tmp_path):
    annotation_file, videos = audio_only_inputs
    out = tmp_path / "out"
    counters = pipeline.run(_argv(annotation_file, videos, out) + ["--set", "num_shards=1"])
    assert counters["videos_written"] == 1
    rows = [json.loads(line) for line in (out / "deadletter" / "rejected.jsonl").read_text().splitlines()]
    assert sorted(r["input"] for r in rows) == [str(videos / "speech.wav"), str(videos / "voice.mp4")]
    for row in rows:
        assert row["stage"] == "DecodeVideo"
        assert row["reason"].startswith("no video stream; this job needs visual features"), row
        assert "visual_2d (builtin_2d), visual_3d (builtin_3d)" in row["reason"]
        assert "frames are empty" not in row["reason"]


def _extract(cfg, videos_dir, annotation):
    fn = transforms.ExtractFeaturesFn(cfg, str(videos_dir))
    fn.setup()
    return list(fn.process(annotation))


@pytest.mark.parametrize("video_id", ["voice", "speech"])
def test_audio_only_inputs_make_records_when_no_stream_needs_frames(audio_only_inputs, video_id):
    _, videos = audio_only_inputs
    off = VisualStreamConfig(extractor="")
    cfg = PreprocessConfig(visual=VisualConfig(stream_2d=off, stream_3d=off))
    annotation = VideoAnnotation(video_id, SECONDS, (Caption(*CAPTION, "a step"),), source="test")
    [(split, vid, serialized, dims)] = _extract(cfg, videos, annotation)
    assert (split, vid) == ("train", video_id) and serialized
    assert dims == {"audio": cfg.audio.num_mel_bins}


# --------------------------------------------------------------------------------------
# 15. Imported feature files are confined to their directory (the job's side; units in test_imported).


def test_escaping_imported_feature_id_is_dead_lettered(audio_only_inputs, tmp_path):
    _, videos = audio_only_inputs
    features_dir = tmp_path / "c3d"
    features_dir.mkdir()
    np.save(tmp_path / "secret.npy", np.ones((3, 4), np.float32))
    np.save(features_dir / "good.npy", np.ones((3, 4), np.float32))
    off = VisualStreamConfig(extractor="")
    cfg = PreprocessConfig(
        visual=VisualConfig(stream_2d=off, stream_3d=off),
        imported_2d=ImportedFeaturesConfig(kind="npy", path=str(features_dir), rate=1.0),
    )
    caption = (Caption(*CAPTION, "a step"),)
    good = VideoAnnotation("good", SECONDS, caption, source="test")
    [(_, _, _, dims)] = _extract(cfg, videos, good)
    assert dims["visual_2d"] == 4
    escaping = VideoAnnotation("../secret", SECONDS, caption, source="test", media_path="good.mp4")
    [rejected] = _extract(cfg, videos, escaping)
    rejected = rejected.value
    assert isinstance(rejected, Rejected) and rejected.stage == "ExtractFeatures"
    assert "Feature file '../secret.npy' of video '../secret' is not a file inside feature directory" in rejected.reason


# --------------------------------------------------------------------------------------
# One overshoot tolerance: the config's max_overshoot_seconds governs the reader's check of
# caption ends against the annotation's duration as well as the job's against the media's.


@pytest.mark.parametrize(
    "tolerance, refused, kept_ends",
    [
        (0.5, [("end 2.8", "0.8"), ("end 4.5", "2.5")], [CAPTION[1]]),
        (3.0, [], [CAPTION[1], SECONDS, SECONDS]),
    ],
    ids=["beyond_tolerance_refused", "within_tolerance_clamped"],
)
def test_caption_overshooting_the_annotated_duration_follows_the_configured_tolerance(
    audio_only_inputs, tmp_path, tolerance, refused, kept_ends
):
    # Each tolerance gives another outcome than the readers' own default (1 or 2 s) would: the
    # test fails unless the job hands the configured one to the reader.
    _, videos = audio_only_inputs
    entry = {"duration": SECONDS, "timestamps": [CAPTION, [0.5, 2.8], [1.0, 4.5]], "sentences": ["a", "b", "c"]}
    annotation_file = tmp_path / "captions.json"
    annotation_file.write_text(json.dumps({"good": entry}))
    out = tmp_path / "out"
    argv = _argv(annotation_file, videos, out) + ["--set", "num_shards=1"]
    counters = pipeline.run(argv + ["--set", f"max_overshoot_seconds={tolerance}"])
    assert counters["videos_written"] == 1
    rows = [json.loads(line) for line in (out / "deadletter" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["reason"].split(" (")[0]) for r in rows] == [
        (
            "ReadAnnotations",
            f"end_past_duration: {end} is {past} s past duration 2.0, more than max_overshoot {tolerance} s",
        )
        for end, past in refused
    ]
    [raw] = tf.data.TFRecordDataset(str(out / "train" / "train-00000-of-00001.tfrecord.gz"), compression_type="GZIP")
    record = features.parse_example(raw, features.read_metadata(str(out))["storage_dtype"])
    duration = float(record[features.DURATION])
    assert record[features.CAPTION_END].numpy().tolist() == pytest.approx([min(e, duration) for e in kept_ends])


def test_reader_arguments_take_the_tolerance_from_the_config():
    cfg = PreprocessConfig(max_overshoot_seconds=0.25)
    assert pipeline.reader_arguments(cfg, {"split": "val"}) == {"split": "val", "max_overshoot": 0.25}
    with pytest.raises(ValueError, match=r"max_overshoot=2\.0: .*set max_overshoot_seconds \(now 0\.25\)"):
        pipeline.reader_arguments(cfg, {"max_overshoot": 2.0})
