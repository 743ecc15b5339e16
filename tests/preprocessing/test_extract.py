"""MediaFeatureExtractor: the features the Beam job stores, computed outside Beam (as serving does)."""

import numpy as np
import pytest
import soundfile
import tensorflow as tf

from avalign import features
from corpus.long_video import write_long_video
from preprocessing import extract, media, transforms
from preprocessing.config import PreprocessConfig
from preprocessing.records import Caption, VideoAnnotation


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    write_long_video(root / "v1.mp4", minutes=0.5, seed=3)
    return root


def test_features_equal_what_the_job_stores(video):
    cfg = PreprocessConfig()
    ann = VideoAnnotation("v1", 30.0, (Caption(1.0, 4.0, "a tone"),), split="train", source="test")
    fn = transforms.ExtractFeaturesFn(cfg, str(video))
    fn.setup()
    ((split, video_id, serialized, dims),) = list(fn.process(ann))
    assert (split, video_id) == ("train", "v1")
    parsed = features.parse_example(tf.constant(serialized), cfg.storage_dtype)

    extractor = extract.MediaFeatureExtractor(cfg)
    assert extractor.needs_frames
    decoded, duration = extractor.decode(str(video / "v1.mp4"))
    logmel, streams = extractor.features(decoded, duration, "v1")
    assert float(parsed[features.DURATION]) == pytest.approx(duration)
    assert dims == {"audio": logmel.shape[1], **{s: m.matrix.shape[1] for s, m in streams.items()}}
    tol = 1e-2 if cfg.storage_dtype == "float16" else 0.0  # the record stores the configured dtype
    np.testing.assert_allclose(parsed[features.AUDIO].numpy(), logmel, atol=tol, rtol=tol)
    for name, stream in streams.items():
        keys = features.stream_keys(name)
        np.testing.assert_allclose(parsed[keys["features"]].numpy(), stream.matrix, atol=tol, rtol=tol)
        assert parsed[keys["extractor"]].numpy().decode() == stream.extractor


def test_a_window_decodes_the_range_with_the_jobs_settings(video):
    cfg = PreprocessConfig()
    extractor = extract.MediaFeatureExtractor(cfg)
    whole, _ = extractor.decode(str(video / "v1.mp4"))
    window, seconds = extractor.decode(str(video / "v1.mp4"), start=10.0, duration=5.0)
    assert seconds == pytest.approx(5.0) and window.start == 10.0
    np.testing.assert_array_equal(window.frames, whole.frames[40:60])
    np.testing.assert_array_equal(window.waveform, whole.waveform[160000:240000])
    logmel, streams = extractor.features(window, seconds, "v1")
    assert logmel.shape[1] == cfg.audio.num_mel_bins and set(streams) == {"visual_2d", "visual_3d"}


def test_audio_only_config_decodes_no_frames_and_explains_a_missing_video(video, tmp_path):
    cfg = PreprocessConfig()
    assert extract.MediaFeatureExtractor(cfg).needs_frames
    wav = tmp_path / "a.wav"
    soundfile.write(str(wav), np.zeros(16000, np.float32), 16000)
    with pytest.raises(media.NoVideoStreamError, match="no video stream; this job needs visual features"):
        extract.MediaFeatureExtractor(cfg).decode(str(wav))
    missing = tmp_path / "nope.mp4"
    with pytest.raises(media.MediaError, match="no such file"):
        extract.MediaFeatureExtractor(cfg).decode(str(missing))
