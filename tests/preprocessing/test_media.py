"""Decoding of videos and audio files written by the tests themselves, and each failure's message."""

import math
import os
from typing import Optional

import av
import numpy as np
import pytest
import soundfile

from preprocessing import media

DURATION = 2.0
FPS = 10
WIDTH, HEIGHT = 160, 120
SQUARE = 32
TONE_HZ = 440.0


def _square_x(index: int, count: int) -> int:
    """Left edge of the red square in video frame `index` (it slides left to right)."""
    return int(index * (WIDTH - SQUARE) / (count - 1))


def _write_video(
    path: str,
    codec: str = "libx264",
    audio_rate: Optional[int] = 44100,
    video: bool = True,
    faststart: bool = False,
) -> str:
    """A DURATION-second mp4: a red square moving over black at FPS, and a TONE_HZ sine in AAC."""
    options = {"movflags": "faststart"} if faststart else {}
    count = int(DURATION * FPS)
    with av.open(path, "w", options=options) as out:
        # Every stream must exist before the first packet is muxed (that writes the header).
        if video:
            vstream = out.add_stream(codec, rate=FPS)
            vstream.width, vstream.height, vstream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if audio_rate:
            astream = out.add_stream("aac", rate=audio_rate)
            astream.layout = "mono"
        if video:
            for i in range(count):
                image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
                x = _square_x(i, count)
                image[40 : 40 + SQUARE, x : x + SQUARE] = (255, 0, 0)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = i
                out.mux(vstream.encode(frame))
            out.mux(vstream.encode())
        if audio_rate:
            t = np.arange(int(DURATION * audio_rate)) / audio_rate
            tone = (0.5 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
            for start in range(0, tone.size, 1024):
                frame = av.AudioFrame.from_ndarray(
                    tone[None, start : start + 1024].copy(), format="fltp", layout="mono"
                )
                frame.sample_rate = audio_rate
                frame.pts = start
                out.mux(astream.encode(frame))
            out.mux(astream.encode())
    return path


def _dominant_hz(waveform: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(waveform.size)))
    return float(np.argmax(spectrum) * sample_rate / waveform.size)


def _square_left_edge(frame: np.ndarray) -> float:
    """Leftmost column where the frame is red (the square)."""
    red = (frame[..., 0] > 150) & (frame[..., 1] < 100) & (frame[..., 2] < 100)
    return float(np.flatnonzero(red.any(axis=0))[0])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    paths = {
        "h264": _write_video(str(root / "h264.mp4")),
        "mpeg4": _write_video(str(root / "mpeg4.mp4"), codec="mpeg4", audio_rate=16000),
        "silent": _write_video(str(root / "silent.mp4"), audio_rate=None),
        "audio_only": _write_video(str(root / "audio_only.m4a"), video=False),
        "faststart": _write_video(str(root / "faststart.mp4"), faststart=True),
    }
    for name, source in (("cut_index", "h264"), ("cut_data", "faststart")):
        with open(paths[source], "rb") as f:
            data = f.read()
        paths[name] = str(root / f"{name}.mp4")
        with open(paths[name], "wb") as f:
            f.write(data[: int(len(data) * 0.6)])
    paths["empty"] = str(root / "empty.mp4")
    open(paths["empty"], "wb").close()
    paths["text"] = str(root / "notes.mp4")
    with open(paths["text"], "w") as f:
        f.write("these are not the frames you are looking for\n" * 20)
    t = np.arange(int(1.5 * 44100)) / 44100
    stereo = np.stack([0.5 * np.sin(2 * np.pi * TONE_HZ * t), 0.25 * np.sin(2 * np.pi * TONE_HZ * t)], axis=1)
    for ext, subtype in (("wav", "PCM_16"), ("flac", "PCM_24"), ("ogg", "VORBIS")):
        paths[ext] = str(root / f"tone.{ext}")
        soundfile.write(paths[ext], stereo, 44100, subtype=subtype)
    paths["bad_wav"] = str(root / "bad.wav")
    with open(paths["bad_wav"], "wb") as f:
        f.write(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(40))
    return paths


@pytest.mark.parametrize("kind, codec", [("h264", "h264"), ("mpeg4", "mpeg4")])
def test_decode_video_audio_and_frames(files, kind, codec):
    decoded = media.decode_video(files[kind], sample_rate=16000, frame_rate=4.0)
    assert decoded.duration == pytest.approx(DURATION, abs=1e-3)
    assert decoded.sample_rate == 16000 and decoded.audio_present
    assert decoded.waveform.dtype == np.float32 and decoded.waveform.shape == (32000,)
    assert np.abs(decoded.waveform).max() <= 1.0
    assert _dominant_hz(decoded.waveform, 16000) == pytest.approx(TONE_HZ, abs=2.0)
    assert np.sqrt(np.mean(decoded.waveform[1600:-1600] ** 2)) == pytest.approx(0.5 / math.sqrt(2), rel=0.1)
    assert decoded.frames.dtype == np.uint8
    assert decoded.frames.shape == (math.ceil(DURATION * 4), HEIGHT, WIDTH, 3) == (8, 120, 160, 3)
    assert decoded.frame_rate == 4.0 and decoded.num_frames == 8
    assert decoded.info["video_codec"] == codec and decoded.info["audio_codec"] == "aac"
    assert decoded.info["width"] == WIDTH and decoded.info["height"] == HEIGHT
    assert decoded.info["original_sample_rate"] == (44100 if kind == "h264" else 16000)
    assert decoded.info["truncated"] is False


def test_frames_are_those_on_screen_at_k_over_rate(files):
    count = int(DURATION * FPS)
    decoded = media.decode_video(files["h264"], frame_rate=4.0)
    for k, frame in enumerate(decoded.frames):
        # t = k / 4 s shows video frame floor(t * FPS).
        assert _square_left_edge(frame) == pytest.approx(_square_x(int(k / 4.0 * FPS), count), abs=2)
    red = decoded.frames[0, 40 : 40 + SQUARE, 2 : SQUARE - 2].reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    full = media.decode_video(files["h264"], frame_rate=FPS)
    assert full.num_frames == count
    assert [_square_left_edge(f) for f in full.frames] == pytest.approx(
        [_square_x(i, count) for i in range(count)], abs=2
    )
    odd = media.decode_video(files["h264"], frame_rate=3.0)
    assert odd.num_frames == math.ceil(DURATION * 3.0)


def test_max_side_downscales_keeping_aspect(files):
    decoded = media.decode_video(files["h264"], frame_rate=2.0, max_side=80)
    assert decoded.frames.shape == (4, 60, 80, 3)
    assert _square_left_edge(decoded.frames[0]) == pytest.approx(0, abs=1)
    same = media.decode_video(files["h264"], frame_rate=2.0, max_side=500)
    assert same.frames.shape == (4, HEIGHT, WIDTH, 3)


def test_no_audio_stream_gives_silence_and_flag(files):
    decoded = media.decode_video(files["silent"], frame_rate=4.0)
    assert decoded.audio_present is False
    assert decoded.waveform.shape == (32000,) and not decoded.waveform.any()
    assert decoded.frames.shape[0] == 8
    assert decoded.info["audio_codec"] is None


def test_sparse_sampling_of_a_silent_video_is_not_mistaken_for_truncation(files):
    # One frame at t=0 is all that is needed; the rest of the video is skipped, not missing.
    decoded = media.decode_video(files["silent"], frame_rate=0.5)
    assert decoded.num_frames == 1 and decoded.info["truncated"] is False
    assert decoded.info["decoded_duration"] == pytest.approx(DURATION, abs=0.15)


def test_audio_only_container(files):
    decoded = media.decode_video(files["audio_only"], frame_rate=None)
    assert decoded.frames.shape == (0, 0, 0, 3) and decoded.frame_rate == 0.0
    assert decoded.audio_present and decoded.waveform.shape == (32000,)
    assert _dominant_hz(decoded.waveform, 16000) == pytest.approx(TONE_HZ, abs=2.0)
    with pytest.raises(media.MediaError, match=r"audio_only\.m4a: has no video stream.*frame_rate=4\.0"):
        media.decode_video(files["audio_only"], frame_rate=4.0)


def test_frames_can_be_skipped(files):
    decoded = media.decode_media(files["h264"], frame_rate=None)
    assert decoded.frames.shape == (0, 0, 0, 3)
    assert decoded.waveform.shape == (32000,)


def test_truncated_mp4_with_index_first_is_reported(files):
    with pytest.raises(media.MediaError, match=r"cut_data\.mp4: truncated: decoded \d\.\d\d s of the declared 2\.00 s"):
        media.decode_video(files["cut_data"])
    partial = media.decode_video(files["cut_data"], frame_rate=4.0, allow_truncated=True)
    assert partial.info["truncated"] is True and partial.info["declared_duration"] == pytest.approx(2.0)
    assert 0.5 < partial.duration < 1.5
    assert partial.waveform.size == round(partial.duration * 16000)
    assert partial.num_frames == math.ceil(partial.duration * 4.0 - 1e-6)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("cut_index", r"cut_index\.mp4: cannot be opened as media"),
        ("text", r"notes\.mp4: cannot be opened as media"),
        ("empty", r"empty\.mp4: empty file \(0 bytes\)"),
    ],
)
def test_unreadable_files_raise_media_error(files, kind, message):
    with pytest.raises(media.MediaError, match=message) as info:
        media.decode_media(files[kind])
    assert isinstance(info.value, ValueError) and info.value.path == files[kind]


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(media.MediaError, match=r"nothere\.mp4: no such file"):
        media.decode_media(str(tmp_path / "nothere.mp4"))
    with pytest.raises(media.MediaError, match="not a regular file"):
        media.decode_video(str(tmp_path))
    with pytest.raises(media.MediaError, match=r"nothere\.wav: no such file"):
        media.decode_media(str(tmp_path / "nothere.wav"))


def test_bad_arguments(files):
    with pytest.raises(ValueError, match="frame_rate must be > 0.*0"):
        media.decode_video(files["h264"], frame_rate=0)
    with pytest.raises(ValueError, match="sample_rate.*8000.5"):
        media.decode_video(files["h264"], sample_rate=8000.5)
    with pytest.raises(ValueError, match="max_side.*0"):
        media.decode_video(files["h264"], max_side=0)


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg"])
def test_audio_files_are_resampled_mono(files, ext):
    decoded = media.decode_media(files[ext], sample_rate=16000)
    assert decoded.audio_present and decoded.sample_rate == 16000
    assert decoded.duration == pytest.approx(1.5)
    assert decoded.waveform.dtype == np.float32 and decoded.waveform.shape == (24000,)
    assert decoded.frames.shape == (0, 0, 0, 3)
    assert _dominant_hz(decoded.waveform, 16000) == pytest.approx(TONE_HZ, abs=2.0)
    # Mono mix of 0.5 and 0.25 amplitude channels.
    assert np.abs(decoded.waveform[2000:-2000]).max() == pytest.approx(0.375, rel=0.05)
    assert decoded.info["original_sample_rate"] == 44100 and decoded.info["original_channels"] == 2


def test_unreadable_audio_file(files):
    with pytest.raises(media.MediaError, match=r"bad\.wav: not readable as audio"):
        media.decode_media(files["bad_wav"])
    assert os.path.getsize(files["bad_wav"]) > 0
