"""A test waveform that the audio tests share."""

import numpy as np

SR = 16000


def tones_chirp_noise(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Two tones, a 100 Hz -> 4.6 kHz chirp and white noise, at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = (
        0.3 * np.sin(2 * np.pi * 440 * t)
        + 0.1 * np.sin(2 * np.pi * 3000 * t)
        + 0.2 * np.sin(2 * np.pi * (100 + 750 * t) * t)
        + 0.05 * rng.standard_normal(t.size)
    )
    return y.astype(np.float32)
