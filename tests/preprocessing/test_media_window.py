"""Windows of a file (media.decode_window): the whole decode's frames and samples for the range, read alone."""

import tracemalloc

import numpy as np
import pytest

from corpus.long_video import write_long_video
from preprocessing import media

FPS = 4.0
SR = 16000


@pytest.fixture(scope="module")
def short_video(tmp_path_factory):
    """A 2-minute video (keyframes every 10 s) and its whole decode."""
    path = write_long_video(tmp_path_factory.mktemp("window") / "short.mp4", minutes=2, seed=1)
    return path, media.decode_video(path, SR, FPS)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    return write_long_video(tmp_path_factory.mktemp("window") / "long.mp4", minutes=20, seed=2)


def _expected(full, start, end):
    i0, i1 = round(start * SR), round(min(end, full.duration) * SR)
    k0, k1 = media._frame_count(start, FPS), media._frame_count(min(end, full.duration), FPS)
    return full.waveform[i0:i1], full.frames[k0:k1]


@pytest.mark.parametrize(
    "start, duration",
    [(0.0, 7.0), (0.3, 12.25), (9.99, 3.0), (10.0, 3.0), (47.13, 20.0), (61.0, None), (110.0, 10.0), (115.5, 30.0)],
    ids=["start", "start-offgrid", "before-keyframe", "at-keyframe", "middle", "to-end", "end", "past-end"],
)
def test_window_is_the_slice_of_the_whole_decode(short_video, start, duration):
    path, full = short_video
    window = media.decode_window(path, start, duration, SR, FPS)
    end = full.duration if duration is None else start + duration
    waveform, frames = _expected(full, start, end)
    # Exact: the track has no AAC noise substitution (media.decode_window's docstring).
    np.testing.assert_array_equal(window.waveform, waveform)
    np.testing.assert_array_equal(window.frames, frames)
    assert window.start == start
    assert window.duration == pytest.approx(min(end, full.duration) - start)
    assert window.info["media_duration"] == full.duration
    assert window.audio_present


def test_windows_tile_the_whole_decode(short_video):
    path, full = short_video
    parts = [media.decode_window(path, s, 25.0, SR, FPS) for s in np.arange(0.0, full.duration, 25.0)]
    np.testing.assert_array_equal(np.concatenate([p.waveform for p in parts]), full.waveform)
    np.testing.assert_array_equal(np.concatenate([p.frames for p in parts]), full.frames)


def test_resampled_window_equals_the_whole_decode(tmp_path):
    """A 16 kHz track decoded at 8 kHz: the window's resampler starts in phase with the whole decode's."""
    path = write_long_video(tmp_path / "v.mp4", minutes=1, sample_rate=16000, keyframe_seconds=5)
    full = media.decode_video(path, 8000, None)
    window = media.decode_window(path, 23.37, 11.0, 8000, None)
    np.testing.assert_array_equal(window.waveform, full.waveform[round(23.37 * 8000) : round(34.37 * 8000)])
    assert window.num_frames == 0


def test_decode_media_takes_a_range_and_keeps_whole_decodes(short_video):
    path, full = short_video
    whole = media.decode_media(path, SR, FPS)
    np.testing.assert_array_equal(whole.waveform, full.waveform)
    assert whole.start == 0.0
    window = media.decode_media(path, SR, FPS, start=30.0, duration=5.0)
    np.testing.assert_array_equal(window.frames, full.frames[120:140])


def test_probe_duration_is_the_whole_decodes(short_video):
    path, full = short_video
    assert media.probe_duration(path) == full.duration == pytest.approx(120.0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"start": -1.0}, "start"),
        ({"start": float("nan")}, "start"),
        ({"start": "3"}, "start"),
        ({"start": 1.0, "duration": 0.0}, "duration"),
        ({"start": 1.0, "duration": -2.0}, "duration"),
        ({"start": 1.0, "duration": float("inf")}, "duration"),
    ],
)
def test_bad_range_is_a_value_error_naming_the_argument(short_video, kwargs, name):
    path, _ = short_video
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        media.decode_window(path, **kwargs)


def test_start_past_the_end_names_start_and_the_duration(short_video):
    path, _ = short_video
    with pytest.raises(media.MediaError, match=r"start=130.0 s is at or after the media's end \(120.000 s\)"):
        media.decode_window(path, 130.0, 5.0)


def test_a_minute_of_a_long_video_holds_only_that_minute(long_video):
    tracemalloc.start()
    try:
        window = media.decode_window(long_video, 600.0, 60.0, SR, FPS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert window.frames.shape == (240, 48, 64, 3)
    assert window.waveform.shape == (60 * SR,)
    # The whole video's frames alone would be 20 * 60 * 4 * 48 * 64 * 3 bytes (44 MB), its
    # waveform 77 MB; the minute's are 2.2 MB and 3.8 MB.
    assert peak < 20 * 2**20, peak
