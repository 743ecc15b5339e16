"""AVLnet's log-Mel recipe computed with librosa: the reference `avalign.audio` is tested and benchmarked against.

tests/avalign/test_audio.py checks the front-end against these functions and
bench/audio_frontend.py times it against them. librosa is a development
dependency (the `dev` extra), not a runtime one, so it is imported on first use.
"""

from __future__ import annotations

import numpy as np

from avalign import audio
from avalign.audio import AudioConfig


def mel_power(waveform: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """The Mel power spectrogram as AVLnet's librosa code computes it.

    Pre-emphasis in numpy (when `cfg.preemphasis` is not 0), then librosa's
    centred, reflect-padded Hamming STFT and Slaney Mel filters.

    Args:
      waveform: [samples] float32 audio at `cfg.sample_rate`.
      cfg: the front-end config.

    Returns:
      float32 [frames, num_mel_bins] power.
    """
    import librosa

    y = np.asarray(waveform, np.float32)
    if cfg.preemphasis:
        y = np.append(y[0], y[1:] - cfg.preemphasis * y[:-1]).astype(np.float32)
    power = librosa.feature.melspectrogram(
        y=y,
        sr=cfg.sample_rate,
        n_fft=audio.fft_length(cfg),
        win_length=audio.window_length(cfg),
        hop_length=audio.hop_length(cfg),
        window="hamming",
        n_mels=cfg.num_mel_bins,
        fmin=cfg.fmin,
        fmax=cfg.fmax if cfg.fmax is not None else cfg.sample_rate / 2,
        center=True,
        pad_mode="reflect",
        power=2.0,
    )
    return power.T


def power_to_db(power: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """librosa's dB of a [frames, bins] power spectrogram (ref 1, floor `audio.AMIN`, `cfg.top_db` below the peak)."""
    import librosa

    return librosa.power_to_db(power, ref=1.0, amin=audio.AMIN, top_db=cfg.top_db)


def log_mel(waveform: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """The log-Mel frames, [frames, num_mel_bins] dB, as AVLnet's librosa recipe computes them."""
    return power_to_db(mel_power(waveform, cfg), cfg)
