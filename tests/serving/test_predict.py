"""From a video file to moments: the predictor end to end, on a corpus video and on a 20-minute one."""

import json
import os
import threading

import numpy as np
import pytest
import tensorflow as tf

from avalign import features
from serving import export_base, predict
from tests.serving.test_client import MODEL, FakeServing

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def export_dir(malta_trained):
    """The localizer the session's MALTA job exported when its training finished."""
    job, _ = malta_trained
    return os.path.join(str(job), "export", "localizer")


@pytest.fixture(scope="module")
def localizer(export_dir):
    return predict.Localizer.load(export_dir)


def _record(records_dir, video_id):
    """The Beam job's serialized record of `video_id`."""
    schema = features.read_metadata(str(records_dir))
    for split_files in schema["files"].values():
        for rel in sorted(split_files):
            for record in tf.data.TFRecordDataset(os.path.join(str(records_dir), rel), compression_type="GZIP"):
                parsed = tf.io.parse_single_example(record, {features.VIDEO_ID: tf.io.FixedLenFeature([], tf.string)})
                if parsed[features.VIDEO_ID].numpy().decode() == video_id:
                    return record.numpy()
    raise AssertionError(f"no record of {video_id}")


def test_a_video_file_gives_what_the_model_gives_on_its_record(localizer, tiny_corpus, tiny_records):
    """Same preprocessing: the predictor's features from the mp4 are the Beam job's (float16-stored) ones."""
    annotations = json.loads((tiny_corpus / "annotations.json").read_text())
    video_id = "v_000001"
    # The job reads English captions (data.caption_field=text_en).
    captions = annotations[video_id]["sentences_en"]
    path = str(tiny_corpus / "videos" / f"{video_id}.mp4")
    result = localizer.localize(path, captions)
    assert len(result.windows) == 1 and result.duration == pytest.approx(annotations[video_id]["duration"], abs=0.3)
    record = _record(tiny_records, video_id)
    served = tf.saved_model.load(localizer.export_dir).signatures["serving_default"]
    want = served(examples=tf.constant([record] * len(captions)), captions=tf.constant(captions))
    for c, got in enumerate(result.captions):
        assert got.caption == captions[c]
        assert got.start_seconds == pytest.approx(float(want["start_seconds"][c]), abs=2e-3)
        assert got.end_seconds == pytest.approx(float(want["end_seconds"][c]), abs=2e-3)
        assert 0 <= got.start_seconds <= got.end_seconds <= result.duration + 1e-3
        assert 1 <= len(got.proposals) <= 5 and got.proposals[0][2] >= got.proposals[-1][2]
        np.testing.assert_allclose(result.attention[c, 0, :, 0], want["video_attention"][c], atol=1e-4)
        np.testing.assert_allclose(result.attention[c, 0, :, 1], want["audio_attention"][c], atol=1e-4)


def test_cli_prints_spans_and_writes_the_attention_plot(export_dir, tiny_corpus, tmp_path, capsys):
    annotations = json.loads((tiny_corpus / "annotations.json").read_text())
    captions_file = tmp_path / "captions.txt"
    captions_file.write_text("\n".join(annotations["v_000007"]["sentences_en"]) + "\n", encoding="utf-8")
    png = tmp_path / "attention.png"
    argv = ["--model", export_dir, "--video", str(tiny_corpus / "videos" / "v_000007.mp4")]
    assert predict.main(argv + ["--captions", str(captions_file), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "best" in out and annotations["v_000007"]["sentences_en"][0] in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert predict.main(argv + ["--captions", str(captions_file), "--json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert len(parsed["captions"]) == len(annotations["v_000007"]["sentences_en"])


def test_a_20_minute_video_is_localized_window_by_window(localizer, tmp_path, monkeypatch):
    from corpus import long_video

    path = long_video.write_long_video(tmp_path / "long.mp4", minutes=20)
    window = localizer.spec["window_seconds"]
    decoded = []
    real = localizer.extractor.decode

    def spy(video, start=0.0, duration=None):
        decoded.append(duration)
        return real(video, start=start, duration=duration)

    monkeypatch.setattr(localizer.extractor, "decode", spy)
    done = []
    caption = _known_caption(localizer)
    result = localizer.localize(path, [caption], progress=lambda i, n: done.append((i, n)))
    assert result.duration == pytest.approx(1200.0, abs=0.5)
    # Memory bounded by the window: nothing was decoded whole.
    assert decoded and max(decoded) <= window + 1e-6
    assert len(result.windows) == len(decoded) == done[-1][1] >= 1200 / window
    assert result.windows[0][0] == 0 and result.windows[-1][1] == pytest.approx(1200.0, abs=0.5)
    got = result.captions[0]
    assert 0 <= got.start_seconds < got.end_seconds <= 1200.0 + 1e-3
    assert got.window[0] <= got.start_seconds and got.end_seconds <= got.window[1] + 1e-3
    assert np.isfinite(got.score) and all(np.isfinite(p[2]) for p in got.proposals)


def _known_caption(localizer):
    with open(os.path.join(localizer.export_dir, export_base.METADATA_DIR, "vocabulary.txt"), encoding="utf-8") as f:
        words = f.read().split()
    return " ".join(words[:4])


def test_url_sends_the_model_calls_to_a_tf_serving_endpoint(localizer, tiny_corpus):
    loaded = tf.saved_model.load(localizer.export_dir)
    server = FakeServing(loaded, export_base.read_metadata(localizer.export_dir))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        remote = predict.Localizer.load(localizer.export_dir, url=server.url, model_name=MODEL)
        video = str(tiny_corpus / "videos" / "v_000001.mp4")
        caption = _known_caption(localizer)
        got = remote.localize(video, [caption]).captions[0]
        want = localizer.localize(video, [caption]).captions[0]
        assert (got.start_seconds, got.end_seconds) == pytest.approx((want.start_seconds, want.end_seconds), abs=2e-3)
        assert any(path.endswith(":predict") for _, path in server.calls)
    finally:
        server.shutdown()
        server.server_close()


def test_bad_input_gets_a_clear_error(localizer, tiny_corpus, tmp_path, capsys, export_dir):
    video = str(tiny_corpus / "videos" / "v_000001.mp4")
    with pytest.raises(predict.PredictError, match="no word the model knows.*ฉันชอบแมว.*English captions"):
        localizer.localize(video, ["ฉันชอบแมว"])
    with pytest.raises(predict.PredictError, match="caption 2 of 2 is empty"):
        localizer.localize(video, [_known_caption(localizer), "  "])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    with pytest.raises(predict.PredictError, match="broken.mp4"):
        localizer.localize(str(broken), [_known_caption(localizer)])
    assert predict.main(["--model", export_dir, "--video", str(tmp_path / "missing.mp4"), "--caption", "x"]) == 2
    assert "missing.mp4" in capsys.readouterr().err
    assert predict.main(["--model", str(tmp_path), "--video", video, "--caption", "x"]) == 2
    assert "neither a SavedModel nor a base of versions" in capsys.readouterr().err
