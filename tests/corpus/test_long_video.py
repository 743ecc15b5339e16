"""corpus.long_video: long mp4s written fast, deterministic, decoding to their asked duration."""

import hashlib

import av
import numpy as np
import pytest

from corpus.long_video import write_long_video


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_twenty_minutes_decode_to_twenty_minutes(tmp_path):
    path = write_long_video(tmp_path / "long.mp4", minutes=20)
    with av.open(path) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.width, video.codec_context.height, audio.codec_context.sample_rate) == (
            64,
            48,
            16000,
        )
        frames = sum(1 for packet in container.demux(video) if packet.size)
        duration = float(video.duration * video.time_base)
    assert abs(frames - 20 * 60 * 4) <= 1
    assert duration == pytest.approx(1200.0, abs=0.25)


def test_same_arguments_write_the_same_bytes(tmp_path):
    first = write_long_video(tmp_path / "a.mp4", minutes=0.25, seed=4)
    second = write_long_video(tmp_path / "b.mp4", minutes=0.25, seed=4)
    other = write_long_video(tmp_path / "c.mp4", minutes=0.25, seed=5)
    assert _digest(first) == _digest(second) != _digest(other)


def test_content_changes_over_time(tmp_path):
    path = write_long_video(tmp_path / "v.mp4", minutes=0.5)
    with av.open(path) as container:
        frames = np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)])
    with av.open(path) as container:
        samples = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
    assert frames.shape[0] == 120
    assert len({frame.tobytes() for frame in frames}) > 100
    per_second = samples[: 30 * 16000].reshape(30, 16000)
    loud = np.abs(per_second).max(axis=1)
    assert (loud[4::5] < 0.02).all() and (np.delete(loud, np.s_[4::5]) > 0.2).all()  # every 5th second silent


@pytest.mark.parametrize(
    "kwargs", [{"minutes": 0}, {"minutes": -1}, {"minutes": 1, "width": 63}, {"minutes": 1, "fps": 0}]
)
def test_bad_arguments_name_themselves(tmp_path, kwargs):
    name = "width" if "width" in kwargs else "fps" if "fps" in kwargs else "minutes"
    with pytest.raises(ValueError, match=f"^{name} must"):
        write_long_video(tmp_path / "v.mp4", **kwargs)
