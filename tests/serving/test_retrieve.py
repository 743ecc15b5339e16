"""serving.retrieve: speech -> videos and video -> speech with the session's exported AVLnet, locally and over REST."""

import json
import math
import os
import shutil
import threading

import numpy as np
import pytest
import soundfile
import tensorflow as tf

from preprocessing import media
from serving import export_base, retrieve
from serving.predict import PredictError
from tests.serving.test_client import MODEL, FakeServing

TOL = dict(rtol=1e-4, atol=1e-5)
VIDEOS = ("v_000000", "v_000001", "v_000002")


@pytest.fixture(scope="module")
def export_dir(avlnet_trained):
    """The retrieval model the session's AVLnet job exported when its training finished (a base of versions)."""
    job, _ = avlnet_trained
    return os.path.join(str(job), "export", "retriever")


@pytest.fixture(scope="module")
def retriever(export_dir):
    return retrieve.Retriever.load(export_dir)


@pytest.fixture(scope="module")
def corpus(tiny_corpus, tmp_path_factory):
    """A dir of three of the corpus' videos, and per video its first narration cut out as a 16 kHz wav."""
    with open(tiny_corpus / "annotations.json", encoding="utf-8") as f:
        annotations = json.load(f)
    root = tmp_path_factory.mktemp("retrieve")
    videos_dir = root / "videos"
    videos_dir.mkdir()
    videos, speech = [], []
    for vid in VIDEOS:
        video = str(videos_dir / f"{vid}.mp4")
        shutil.copy(tiny_corpus / "videos" / f"{vid}.mp4", video)
        start, end = annotations[vid]["narration"][0]
        wave = media.decode_media(video, sample_rate=16000, frame_rate=None).waveform
        wav = str(root / f"{vid}_speech.wav")
        soundfile.write(wav, wave[int(start * 16000) : int(end * 16000)], 16000)
        videos.append(video)
        speech.append(wav)
    # A wav beside the videos: ranking the dir's videos leaves it out.
    shutil.copy(speech[0], videos_dir / "query.wav")
    return {"dir": str(videos_dir), "videos": videos, "speech": speech}


@pytest.fixture(scope="module")
def signatures(retriever):
    return tf.saved_model.load(retriever.export_dir).signatures


def _signature(signatures, name, **inputs):
    return {k: v.numpy() for k, v in signatures[name](**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def _speech_embeddings(retriever, signatures, wav):
    """The query's windows embedded by hand: the job's log-Mel, float16 as stored, cut as the task cuts a clip."""
    decoded = media.decode_media(wav, 16000, frame_rate=None)
    log_mel = retriever.extractor.audio_features(decoded).astype(np.float16).astype(np.float32)
    frames, seconds = retriever.params["clips"]["max_audio_frames"], decoded.duration
    assert frames == 256 and 2.56 < seconds <= 3.84  # two windows: [0, 2.56) and the one that ends at the end
    crops, lengths = [], []
    for t in (0.0, seconds - 2.56):
        a0 = round(t * 100)
        length = min(round(min(t + 2.56, seconds) * 100), len(log_mel)) - a0
        crops.append(np.pad(log_mel[a0 : a0 + length], [(0, frames - length), (0, 0)]))
        lengths.append(length)
    inputs = dict(log_mel=np.stack(crops), audio_length=np.array(lengths, np.int32))
    return _signature(signatures, "embed_audio_log_mel", **inputs)["audio_embedding"]


def _window_embedding(retriever, signatures, video, start, end):
    """One window of a video embedded by hand: the job's features of the window, its first ceil(s * rate) steps."""
    decoded, seconds = retriever.extractor.decode(video, start=start, duration=end - start)
    _, streams = retriever.extractor.features(decoded, seconds, "v")
    rate = retriever.schema["streams"]["visual_2d"]["rate"]
    have = [len(streams[s].matrix) for s in retriever.streams]
    steps = min(math.ceil(seconds * rate), retriever.params["clips"]["max_visual_steps"], *have)
    inputs = {s: streams[s].matrix[None, :steps].astype(np.float16).astype(np.float32) for s in retriever.streams}
    inputs["visual_mask"] = np.ones([1, steps], np.float32)
    return _signature(signatures, "embed_video", **inputs)["video_embedding"]


def test_rank_videos_by_speech_gives_the_signatures_scores(retriever, signatures, corpus):
    query = corpus["speech"][0]
    ranked = retriever.rank_videos(query, corpus["videos"])
    assert sorted(m.path for m in ranked) == sorted(corpus["videos"])
    scores = [m.score for m in ranked]
    assert np.all(np.isfinite(scores)) and scores == sorted(scores, reverse=True)
    audio = _speech_embeddings(retriever, signatures, query)
    for match in ranked:
        start, end = match.window
        assert 0 <= start < end <= media.probe_duration(match.path) + 1e-3
        assert end - start == pytest.approx(retriever.clip_seconds, abs=1e-3)
        video = _window_embedding(retriever, signatures, match.path, start, end)
        sim = _signature(signatures, "score", audio_embedding=audio, video_embedding=video)["similarity"]
        np.testing.assert_allclose(match.score, sim.max(), **TOL)


def test_rank_audio_by_a_window_of_a_video(retriever, corpus):
    clips = corpus["speech"] + [corpus["videos"][2]]  # a video's own audio track is a clip too
    ranked = retriever.rank_audio(corpus["videos"][1], clips, start=1.0, duration=3.0)
    assert sorted(m.path for m in ranked) == sorted(clips)
    scores = [m.score for m in ranked]
    assert np.all(np.isfinite(scores)) and scores == sorted(scores, reverse=True)
    video, windows = retriever.embed_video(corpus["videos"][1], start=1.0, duration=3.0)
    np.testing.assert_allclose(windows, [[1.0, 1.0 + retriever.clip_seconds], [4.0 - retriever.clip_seconds, 4.0]])
    for match in ranked:
        np.testing.assert_allclose(match.score, (retriever.embed_speech(match.path) @ video.T).max(), **TOL)


@pytest.fixture
def server(retriever):
    served = FakeServing(tf.saved_model.load(retriever.export_dir), export_base.read_metadata(retriever.export_dir))
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield served
    served.shutdown()
    served.server_close()


def test_cli_ranks_a_directory_through_tf_serving_as_locally(retriever, corpus, server, capsys):
    query = corpus["speech"][0]
    argv = ["--model", retriever.export_dir, "--audio", query, "--videos", corpus["dir"], "--stride", "2.56"]
    assert retrieve.main(argv + ["--url", server.url, "--model-name", MODEL, "--json", "--top", "2"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert any(path.endswith(":predict") for _, path in server.calls)
    want = retriever.rank_videos(query, corpus["videos"], stride=2.56)[:2]
    assert got["query"] == query and got["direction"] == "audio->video"
    assert [m["path"] for m in got["matches"]] == [m.path for m in want]  # the wav in the dir is no video
    np.testing.assert_allclose([m["score"] for m in got["matches"]], [m.score for m in want], **TOL)
    assert [tuple(m["window"]) for m in got["matches"]] == [m.window for m in want]
    # The one predictor command forwards retrieval flags here.
    from serving import predict

    assert predict.main(argv + ["--json", "--top", "2"]) == 0
    local = json.loads(capsys.readouterr().out)
    assert [m["path"] for m in local["matches"]] == [m.path for m in want]


def test_bad_inputs_are_errors_that_name_the_file(retriever, corpus, tmp_path, capsys):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 64)
    silent = tmp_path / "silent.wav"
    soundfile.write(str(silent), np.zeros(0, np.float32), 16000)
    with pytest.raises(PredictError, match=r"garbage\.mp4: cannot be decoded"):
        retriever.rank_videos(corpus["speech"][0], [str(garbage), corpus["videos"][0]])
    with pytest.raises(PredictError, match=r"garbage\.mp4: cannot be decoded as audio"):
        retriever.rank_videos(str(garbage), corpus["videos"])
    with pytest.raises(PredictError, match=r"silent\.wav: .*no audio samples"):
        retriever.rank_audio(corpus["videos"][0], [str(silent)], duration=1.0)
    with pytest.raises(PredictError, match="start=30.0 s is outside"):
        retriever.rank_audio(corpus["videos"][0], corpus["speech"], start=30.0)
    empty = tmp_path / "no_media"
    empty.mkdir()
    (empty / "notes.txt").write_text("no media here")
    with pytest.raises(PredictError, match="no_media: a directory with no media file"):
        retrieve.media_files([str(empty)])

    assert retrieve.main(["--model", retriever.export_dir, "--video", corpus["videos"][0], "--clips", str(empty)]) == 2
    assert "no_media: a directory with no media file" in capsys.readouterr().err
    assert retrieve.main(["--model", str(tmp_path), "--audio", corpus["speech"][0], "--videos", corpus["dir"]]) == 2
    assert "neither a SavedModel nor a base of versions" in capsys.readouterr().err
    assert retrieve.main(["--model", retriever.export_dir, "--audio", corpus["speech"][0]]) == 2
    assert "--audio ranks --videos" in capsys.readouterr().err
