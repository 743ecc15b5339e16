"""The one audio front-end: log-Mel and MFCC frames as TensorFlow ops, shared by Beam, tf.data and serving.

Every number follows `AudioConfig` (AVLnet defaults: 16 kHz, pre-emphasis 0.97, 25 ms
periodic Hamming window, 10 ms hop, 40 Slaney Mel bins from 20 Hz, power in dB) and
matches librosa (`librosa.feature.melspectrogram(..., center=True, pad_mode="reflect")`
followed by `librosa.power_to_db(ref=1.0, amin=1e-10)`), as AVLnet's reference code
computes it. The Mel, window, DCT and Savitzky-Golay matrices are built in numpy once
and embedded as constants, so a SavedModel carries the exact same front-end.

Framing is centred the way librosa's `center=True` is: the pre-emphasized waveform is
reflect-padded by `n_fft // 2` on both sides, so frame `t` is centred on sample
`t * hop` and a waveform of `n` samples gives `num_frames(n, cfg) = 1 + n // hop`
frames (for an even FFT size). Inside the graph, a waveform shorter than one window
is still reflect-padded (repeated reflection, as numpy's `pad` does) and yields its
`num_frames` frames; an empty waveform is treated as one zero sample and gives one
frame at the dB floor. The numpy entry points reject empty or non-finite input.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import math
import os
import threading
from typing import Any, Optional, Union

import numpy as np
import tensorflow as tf

from avalign import hyperparams


@dataclasses.dataclass
class AudioConfig:
    """The one audio front-end (AVLnet defaults).

    Attributes:
      sample_rate: Hz that every decoded track is resampled to (mono).
      preemphasis: pre-emphasis coefficient; 0 disables it.
      window_seconds: analysis window length (Hamming).
      hop_seconds: hop between frames; 1 / hop_seconds frames per second.
      num_mel_bins: Mel filters.
      fmin: lowest Mel filter edge in Hz.
      fmax: highest edge in Hz; None means sample_rate / 2.
      n_fft: FFT size; None means the next power of two >= window length.
      top_db: floor of the dB scale relative to the maximum, None to disable.
      num_mfcc: cepstral coefficients kept by the MFCC view.
      mfcc_deltas: whether the MFCC view appends deltas and delta-deltas.
    """

    sample_rate: int = hyperparams.field(16000, bounds="[1, inf)")
    preemphasis: float = hyperparams.field(0.97, bounds="[0, 1)")
    window_seconds: float = hyperparams.field(0.025, bounds="(0, inf)")
    hop_seconds: float = hyperparams.field(0.010, bounds="(0, inf)")
    num_mel_bins: int = hyperparams.field(40, bounds="[1, inf)")
    fmin: float = hyperparams.field(20.0, bounds="[0, inf)")
    fmax: Optional[float] = hyperparams.field(None, bounds="(0, inf)")
    n_fft: Optional[int] = hyperparams.field(None, bounds="[1, inf)")
    top_db: Optional[float] = hyperparams.field(None, bounds="[0, inf)")
    num_mfcc: int = hyperparams.field(13, bounds="[1, inf)")
    mfcc_deltas: bool = True

    def __post_init__(self):
        hyperparams.validate(self)
        if self.hop_seconds > self.window_seconds:
            raise ValueError(
                f"audio.hop_seconds must be in (0, window_seconds={self.window_seconds}], got {self.hop_seconds}."
            )
        if self.fmax is not None and self.fmax <= self.fmin:
            raise ValueError(f"audio.fmax={self.fmax} must exceed audio.fmin={self.fmin}.")

    @property
    def frame_rate(self) -> float:
        """Feature frames per second."""
        return 1.0 / self.hop_seconds


AMIN = 1e-10
DELTA_WIDTH = 9

_DB_SCALE = 10.0 / math.log(10.0)


# ---------------------------------------------------------------------------
# Sizes and constant matrices (numpy, built once per configuration).
# ---------------------------------------------------------------------------


def window_length(cfg: AudioConfig) -> int:
    """Analysis window length in samples (`round(window_seconds * sample_rate)`)."""
    return int(round(cfg.window_seconds * cfg.sample_rate))


def hop_length(cfg: AudioConfig) -> int:
    """Hop between frames in samples (`round(hop_seconds * sample_rate)`)."""
    return int(round(cfg.hop_seconds * cfg.sample_rate))


def fft_length(cfg: AudioConfig) -> int:
    """FFT size: `cfg.n_fft`, or the next power of two at least the window length.

    Raises:
      ValueError: if `cfg.n_fft` is shorter than the window.
    """
    win = window_length(cfg)
    if cfg.n_fft is None:
        return 1 << max(win - 1, 0).bit_length()
    if cfg.n_fft < win:
        raise ValueError(f"audio.n_fft={cfg.n_fft} must be >= the window length {win} samples.")
    return int(cfg.n_fft)


def num_frames(num_samples: int, cfg: AudioConfig) -> int:
    """Frames that `log_mel` returns for a waveform of `num_samples` samples.

    With the centred framing this is `1 + num_samples // hop` for an even FFT size
    (librosa's count for `center=True`). An empty waveform counts as one sample.

    Args:
      num_samples: waveform length in samples (>= 0).
      cfg: the front-end configuration.

    Returns:
      The number of feature frames.

    Raises:
      ValueError: if `num_samples` is negative.
    """
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}.")
    n_fft = fft_length(cfg)
    return 1 + (max(int(num_samples), 1) + 2 * (n_fft // 2) - n_fft) // hop_length(cfg)


def _hz_to_mel(freqs: np.ndarray) -> np.ndarray:
    """Slaney's Mel scale (librosa's `htk=False`): linear below 1 kHz, logarithmic above."""
    freqs = np.asarray(freqs, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = freqs / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    log_region = freqs >= min_log_hz
    mels[log_region] = min_log_mel + np.log(freqs[log_region] / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Inverse of `_hz_to_mel`."""
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    log_region = mels >= min_log_mel
    freqs[log_region] = min_log_hz * np.exp(logstep * (mels[log_region] - min_log_mel))
    return freqs


@functools.lru_cache(maxsize=16)
def _mel_matrix(sample_rate: int, n_fft: int, num_mel_bins: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney-normalized triangular Mel filters, (n_fft // 2 + 1, num_mel_bins) float32.

    The same construction as `librosa.filters.mel(htk=False, norm="slaney")`, in
    float64 and cast to float32 at the end as librosa does, transposed so that a
    power spectrum (..., bins) right-multiplies it.
    """
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mel_edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array([fmin]))[0], _hz_to_mel(np.array([fmax]))[0], num_mel_bins + 2)
    )
    fdiff = np.diff(mel_edges)
    ramps = mel_edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_edges[2:] - mel_edges[:-2]))[:, None]
    empty = np.flatnonzero(weights.max(axis=1) == 0)
    if empty.size:
        logging.warning(
            "Mel filters %s are empty (sample_rate=%d, n_fft=%d, num_mel_bins=%d): too many bins for the FFT size.",
            empty.tolist(),
            sample_rate,
            n_fft,
            num_mel_bins,
        )
    matrix = np.ascontiguousarray(weights.T.astype(np.float32))
    matrix.setflags(write=False)
    return matrix


def mel_matrix(cfg: AudioConfig) -> np.ndarray:
    """The Mel filterbank of `cfg`, (n_fft // 2 + 1, num_mel_bins) float32, as librosa builds it."""
    fmax = cfg.fmax if cfg.fmax is not None else cfg.sample_rate / 2.0
    if fmax > cfg.sample_rate / 2.0:
        raise ValueError(f"audio.fmax={fmax} exceeds the Nyquist frequency {cfg.sample_rate / 2.0}.")
    return _mel_matrix(int(cfg.sample_rate), fft_length(cfg), int(cfg.num_mel_bins), float(cfg.fmin), float(fmax))


@functools.lru_cache(maxsize=16)
def _hamming(length: int) -> np.ndarray:
    """Periodic Hamming window (`scipy.signal.get_window("hamming", n, fftbins=True)`, librosa's choice)."""
    window = (0.54 - 0.46 * np.cos(2.0 * np.pi * np.arange(length) / length)).astype(np.float32)
    window.setflags(write=False)
    return window


@functools.lru_cache(maxsize=16)
def _dct_matrix(num_mel_bins: int, num_mfcc: int) -> np.ndarray:
    """Orthonormal DCT-II (`scipy.fft.dct(type=2, norm="ortho")`), (num_mel_bins, num_mfcc) float32."""
    m = np.arange(num_mel_bins, dtype=np.float64)
    k = np.arange(num_mfcc, dtype=np.float64)
    basis = np.cos(np.pi * np.outer(2.0 * m + 1.0, k) / (2.0 * num_mel_bins)) * math.sqrt(2.0 / num_mel_bins)
    basis[:, 0] *= 1.0 / math.sqrt(2.0)
    basis = basis.astype(np.float32)
    basis.setflags(write=False)
    return basis


@functools.lru_cache(maxsize=8)
def _savgol_coefficients(width: int, order: int) -> np.ndarray:
    """Savitzky-Golay weights of the `order`-th derivative at the centre of a `width` window.

    Fitting a polynomial of degree `order` by least squares to `x[t - h .. t + h]` and
    differentiating it `order` times at `t` is the dot product of these weights with
    that window, which is what `librosa.feature.delta` (`scipy.signal.savgol_filter`
    with `polyorder=deriv=order`) computes away from the edges.
    """
    half = width // 2
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    vander = offsets[:, None] ** np.arange(order + 1)[None, :]
    coefficients = math.factorial(order) * np.linalg.pinv(vander)[order]
    return coefficients.astype(np.float32)


# ---------------------------------------------------------------------------
# Graph ops.
# ---------------------------------------------------------------------------


def _reflect_indices(positions: tf.Tensor, length: tf.Tensor) -> tf.Tensor:
    """Maps positions outside [0, length) into it by repeated reflection (numpy's `pad(mode="reflect")`)."""
    period = tf.maximum(2 * (length - 1), 1)
    folded = tf.math.floormod(positions, period)
    return tf.where(folded < length, folded, period - folded)


def _preemphasize(waveform: tf.Tensor, coefficient: float) -> tf.Tensor:
    """`y[0], y[1:] - a * y[:-1]` along the last axis (AVLnet's pre-emphasis; keeps the first sample)."""
    if coefficient == 0:
        return waveform
    return tf.concat([waveform[..., :1], waveform[..., 1:] - coefficient * waveform[..., :-1]], axis=-1)


def _padding(cfg: AudioConfig) -> tuple[int, int]:
    """Samples of reflect padding (left, right) so that window-length frames reproduce librosa's centring.

    librosa pads `n_fft // 2` on both sides and centres the `win`-sample window in
    the `n_fft` frame; only the window's non-zero samples matter, so the frames are
    taken `win` samples long (rfft zero-pads them to n_fft, which moves the phase,
    not the power) from a signal padded by these amounts.
    """
    win = window_length(cfg)
    n_fft = fft_length(cfg)
    left = n_fft // 2 - (n_fft - win) // 2
    right = 2 * (n_fft // 2) - n_fft + win - left
    return left, right


def pad_waveform(waveform: tf.Tensor, cfg: AudioConfig) -> tf.Tensor:
    """Pre-emphasis and the centring reflect padding: what framing reads.

    Args:
      waveform: float (..., samples); an empty one is taken as one zero sample.
      cfg: the front-end configuration.

    Returns:
      float32 (..., max(samples, 1) + left + right), see `_padding`.
    """
    left, right = _padding(cfg)
    waveform = tf.convert_to_tensor(waveform, dtype=tf.float32)
    # An empty waveform becomes one zero sample so that it still gives one frame.
    length = tf.shape(waveform)[-1]
    missing = tf.maximum(1 - length, 0)
    paddings = tf.concat([tf.zeros([tf.rank(waveform) - 1, 2], tf.int32), [[0, missing]]], axis=0)
    waveform = tf.pad(waveform, paddings)
    length = tf.shape(waveform)[-1]
    waveform = _preemphasize(waveform, float(cfg.preemphasis))
    left_idx = _reflect_indices(tf.range(-left, 0), length)
    right_idx = _reflect_indices(tf.range(length, length + right), length)
    return tf.concat(
        [tf.gather(waveform, left_idx, axis=-1), waveform, tf.gather(waveform, right_idx, axis=-1)], axis=-1
    )


def _frame(padded: tf.Tensor, count: Union[int, tf.Tensor], cfg: AudioConfig) -> tf.Tensor:
    """`count` frames of `window_length` samples every `hop_length` samples: (..., count, win).

    Built from `ceil(win / hop)` shifted views of the signal cut into hop-long rows,
    one concatenation, which is several times cheaper than a gather per sample.
    """
    win = window_length(cfg)
    hop = hop_length(cfg)
    rows_per_frame = -(-win // hop)
    needed = (count - 1 + rows_per_frame) * hop
    shortfall = tf.maximum(needed - tf.shape(padded)[-1], 0)
    paddings = tf.concat([tf.zeros([tf.rank(padded) - 1, 2], tf.int32), [[0, shortfall]]], axis=0)
    padded = tf.pad(padded, paddings)[..., :needed]
    rows = tf.reshape(padded, tf.concat([tf.shape(padded)[:-1], [-1, hop]], axis=0))
    pieces = [rows[..., i : i + count, :] for i in range(rows_per_frame)]
    pieces[-1] = pieces[-1][..., : win - (rows_per_frame - 1) * hop]
    return tf.concat(pieces, axis=-1)


def _power_from_padded(padded: tf.Tensor, count: Union[int, tf.Tensor], cfg: AudioConfig) -> tf.Tensor:
    frames = _frame(padded, count, cfg) * tf.constant(_hamming(window_length(cfg)))
    spectrum = tf.signal.rfft(frames, fft_length=[fft_length(cfg)])
    return tf.math.square(tf.math.real(spectrum)) + tf.math.square(tf.math.imag(spectrum))


def mel_power_from_padded(padded: tf.Tensor, count: Union[int, tf.Tensor], cfg: AudioConfig) -> tf.Tensor:
    """Mel-band power of the first `count` frames of a signal laid out as `pad_waveform` returns it.

    Args:
      padded: float32 (..., samples), pre-emphasized and padded; frame `t` reads
        samples `[t * hop, t * hop + win)`.
      count: frames to compute.
      cfg: the front-end configuration.

    Returns:
      float32 (..., count, num_mel_bins) power (not dB).
    """
    return tf.tensordot(_power_from_padded(padded, count, cfg), tf.constant(mel_matrix(cfg)), axes=1)


def frame_count(num_samples: tf.Tensor, cfg: AudioConfig) -> tf.Tensor:
    """In-graph `num_frames`: frames of a waveform of `num_samples` samples (a scalar tensor)."""
    n_fft = fft_length(cfg)
    return 1 + (tf.maximum(num_samples, 1) + 2 * (n_fft // 2) - n_fft) // hop_length(cfg)


def power_spectrogram(waveform: tf.Tensor, cfg: AudioConfig) -> tf.Tensor:
    """Pre-emphasis, centred Hamming-windowed frames and their power spectrum.

    Args:
      waveform: float (..., samples) at `cfg.sample_rate`; leading batch dims allowed
        and the length may be unknown.
      cfg: the front-end configuration.

    Returns:
      float32 (..., num_frames, n_fft // 2 + 1) power `|STFT|^2`.
    """
    waveform = tf.convert_to_tensor(waveform, dtype=tf.float32)
    return _power_from_padded(pad_waveform(waveform, cfg), frame_count(tf.shape(waveform)[-1], cfg), cfg)


def power_to_db(power: tf.Tensor, top_db: Optional[float] = None) -> tf.Tensor:
    """`10 * log10(max(power, 1e-10))`, floored `top_db` below each example's maximum when set.

    Equals `librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=top_db)`; with a
    batch, the `top_db` floor is taken per example over its (frames, bins).

    Args:
      power: float32 (..., frames, bins).
      top_db: dynamic range kept below the maximum, or None for no floor.

    Returns:
      float32 dB of the same shape.

    Raises:
      ValueError: if `top_db` is negative.
    """
    return floor_db(_DB_SCALE * tf.math.log(tf.maximum(power, AMIN)), top_db)


def floor_db(db: tf.Tensor, top_db: Optional[float]) -> tf.Tensor:
    """Raises dB values to `top_db` below each example's maximum over (frames, bins); identity for None.

    Raises:
      ValueError: if `top_db` is negative.
    """
    if top_db is None:
        return db
    if top_db < 0:
        raise ValueError(f"top_db must be >= 0 or None, got {top_db}.")
    peak = tf.reduce_max(db, axis=[-2, -1], keepdims=True)
    return tf.maximum(db, peak - top_db)


def log_mel(waveform: tf.Tensor, cfg: Optional[AudioConfig] = None) -> tf.Tensor:
    """Log-Mel frames of a waveform: the one audio front-end.

    Graph-safe: works eagerly, under `tf.function` with unknown length, and with any
    leading batch dims (a batch must share one length; pad it beforehand). Input
    shorter than one window still gives `num_frames(samples)` frames (one below one
    hop) from its reflect-padded self; an empty waveform gives one frame at -100 dB.

    Args:
      waveform: float (..., samples), mono, at `cfg.sample_rate`, nominally in [-1, 1].
      cfg: the front-end configuration; AVLnet defaults when None.

    Returns:
      float32 (..., num_frames(samples), cfg.num_mel_bins) power in dB.
    """
    cfg = cfg or AudioConfig()
    waveform = tf.convert_to_tensor(waveform, dtype=tf.float32)
    count = frame_count(tf.shape(waveform)[-1], cfg)
    return power_to_db(mel_power_from_padded(pad_waveform(waveform, cfg), count, cfg), cfg.top_db)


def delta(features: tf.Tensor, order: int = 1, width: int = DELTA_WIDTH) -> tf.Tensor:
    """Savitzky-Golay derivative along the frame axis (-2), as `librosa.feature.delta(mode="interp")`.

    Away from the edges each output is the `order`-th derivative of a least-squares
    polynomial of degree `order` over `width` frames; the first and last `width // 2`
    frames take the value of the nearest full window (what `mode="interp"` gives when
    the polynomial degree equals the derivative order). Inputs shorter than `width`
    frames, which librosa rejects, are edge-padded instead (`mode="nearest"`).

    Args:
      features: float32 (..., frames, dims).
      order: 1 for deltas, 2 for delta-deltas.
      width: odd window length in frames, >= 3.

    Returns:
      float32 (..., frames, dims).

    Raises:
      ValueError: if `width` is not an odd integer >= 3 or `order` is not in {1, 2}.
    """
    if width < 3 or width % 2 == 0:
        raise ValueError(f"delta width must be an odd integer >= 3, got {width}.")
    if order not in (1, 2):
        raise ValueError(f"delta order must be 1 or 2, got {order}.")
    half = width // 2
    coefficients = _savgol_coefficients(width, order)
    features = tf.convert_to_tensor(features, dtype=tf.float32)
    count = tf.shape(features)[-2]
    positions = tf.range(-half, count + half)
    padded = tf.gather(features, tf.clip_by_value(positions, 0, count - 1), axis=-2)
    out = tf.zeros_like(features)
    for i, weight in enumerate(coefficients):
        if weight != 0:
            out += float(weight) * padded[..., i : i + count, :]
    # mode="interp": the edges repeat the nearest full-window value when one exists.
    frame_idx = tf.range(count)
    interp_idx = tf.minimum(tf.maximum(frame_idx, half), count - 1 - half)
    idx = tf.where(count >= width, interp_idx, frame_idx)
    return tf.gather(out, idx, axis=-2)


def mfcc(log_mel_db: tf.Tensor, cfg: Optional[AudioConfig] = None) -> tf.Tensor:
    """MFCCs of log-Mel frames, with deltas and delta-deltas when `cfg.mfcc_deltas`.

    The cepstrum is the orthonormal DCT-II over Mel bins of the dB frames, as
    `librosa.feature.mfcc(S=log_mel_db)` computes it (no liftering); deltas are
    `delta(order=1)` and `delta(order=2)` of the cepstrum, concatenated after it.

    Args:
      log_mel_db: float32 (..., frames, cfg.num_mel_bins) from `log_mel`.
      cfg: the front-end configuration; AVLnet defaults when None.

    Returns:
      float32 (..., frames, cfg.num_mfcc * (3 if cfg.mfcc_deltas else 1)).

    Raises:
      ValueError: if `cfg.num_mfcc` is not in [1, num_mel_bins] or the input's last
        dim is not `cfg.num_mel_bins`.
    """
    cfg = cfg or AudioConfig()
    if not 1 <= cfg.num_mfcc <= cfg.num_mel_bins:
        raise ValueError(f"audio.num_mfcc must be in [1, num_mel_bins={cfg.num_mel_bins}], got {cfg.num_mfcc}.")
    log_mel_db = tf.convert_to_tensor(log_mel_db, dtype=tf.float32)
    bins = log_mel_db.shape[-1]
    if bins is not None and bins != cfg.num_mel_bins:
        raise ValueError(f"log_mel_db has {bins} bins in its last dim, expected audio.num_mel_bins={cfg.num_mel_bins}.")
    cepstrum = tf.tensordot(log_mel_db, tf.constant(_dct_matrix(cfg.num_mel_bins, cfg.num_mfcc)), axes=1)
    if not cfg.mfcc_deltas:
        return cepstrum
    return tf.concat([cepstrum, delta(cepstrum, order=1), delta(cepstrum, order=2)], axis=-1)


def mfcc_dim(cfg: AudioConfig) -> int:
    """Width of the MFCC view: `num_mfcc`, tripled with deltas."""
    return cfg.num_mfcc * (3 if cfg.mfcc_deltas else 1)


# ---------------------------------------------------------------------------
# Exportable module and the numpy fast path.
# ---------------------------------------------------------------------------


class LogMelFrontEnd(tf.Module):
    """`log_mel` as a `tf.Module` with fixed signatures, to save inside a SavedModel.

    `__call__` takes one waveform (samples,) and `batch` takes (batch, samples);
    both are traced once per instance whatever the length. Loaded back with
    `tf.saved_model.load`, the object is callable the same way.

    Args:
      cfg: the front-end configuration; AVLnet defaults when None.
      name: the module's name.

    Attributes:
      sample_rate: int32 variable, the waveform rate expected.
      frame_rate: float32 variable, output frames per second.
      num_mel_bins: int32 variable, output width.
    """

    def __init__(self, cfg: Optional[AudioConfig] = None, name: Optional[str] = None):
        super().__init__(name=name)
        self._cfg = dataclasses.replace(cfg) if cfg is not None else AudioConfig()
        # Validates the configuration (window, FFT size, fmax) now rather than at trace time.
        mel_matrix(self._cfg)
        # Variables, unlike constants, are saved with the module: a loaded front-end tells its rates.
        self.sample_rate = tf.Variable(self._cfg.sample_rate, dtype=tf.int32, trainable=False, name="sample_rate")
        self.frame_rate = tf.Variable(self._cfg.frame_rate, dtype=tf.float32, trainable=False, name="frame_rate")
        self.num_mel_bins = tf.Variable(self._cfg.num_mel_bins, dtype=tf.int32, trainable=False, name="num_mel_bins")

    @property
    def config(self) -> AudioConfig:
        """The configuration this front-end was built with."""
        return self._cfg

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="waveform")])
    def __call__(self, waveform: tf.Tensor) -> tf.Tensor:
        """Log-Mel frames (num_frames, num_mel_bins) of one waveform (samples,)."""
        return log_mel(waveform, self._cfg)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="waveforms")])
    def batch(self, waveforms: tf.Tensor) -> tf.Tensor:
        """Log-Mel frames (batch, num_frames, num_mel_bins) of equal-length waveforms (batch, samples)."""
        return log_mel(waveforms, self._cfg)


_FRONT_ENDS: dict[tuple[Any, ...], LogMelFrontEnd] = {}
_FAST_PATHS: dict[tuple[Any, ...], "_NumpyLogMel"] = {}
_CACHE_LOCK = threading.Lock()
_POOL: Optional[concurrent.futures.ThreadPoolExecutor] = None


def front_end(cfg: Optional[AudioConfig] = None) -> LogMelFrontEnd:
    """The process-wide `LogMelFrontEnd` of `cfg` (one per distinct configuration, traced once)."""
    cfg = cfg or AudioConfig()
    key = dataclasses.astuple(cfg)
    with _CACHE_LOCK:
        module = _FRONT_ENDS.get(key)
        if module is None:
            logging.info("Building the log-Mel front-end for %s", cfg)
            module = LogMelFrontEnd(cfg)
            _FRONT_ENDS[key] = module
    return module


def _thread_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _POOL
    with _CACHE_LOCK:
        if _POOL is None:
            _POOL = concurrent.futures.ThreadPoolExecutor(
                max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="log_mel"
            )
    return _POOL


class _NumpyLogMel:
    """`log_mel` for long numpy waveforms: the same ops, compiled with XLA over fixed-size chunks.

    A single graph over a whole long waveform spends most of its time moving
    intermediates (frames, spectra) through memory; XLA fuses pre-emphasis,
    framing, window, power and Mel projection, and fixed chunks of `CHUNK_FRAMES`
    frames keep them in cache and compile once. Chunks only hold frames whose
    samples are all inside the waveform (past its first sample, which pre-emphasis
    keeps as is); the few frames at each end that see the reflect padding come from
    the general graph on short slices. All pieces run on a small thread pool and
    `top_db`, if set, is applied last over the whole result (the global maximum).
    Waveforms shorter than one chunk (about 20 s) go through `front_end(cfg)`.
    """

    # 20.48 s at 10 ms: measured fastest of 512..4096 (smaller pays per-call costs, larger spills cache).
    CHUNK_FRAMES = 2048

    def __init__(self, cfg: AudioConfig):
        self.cfg = cfg
        self.hop = hop_length(cfg)
        self.win = window_length(cfg)
        self.left, _ = _padding(cfg)
        # Frame t starts at sample t * hop - left; chunks take those starting at sample >= 1.
        self.first_inner = -(-(self.left + 1) // self.hop)
        self.chunk_samples = (self.CHUNK_FRAMES - 1) * self.hop + self.win + 1
        waveform_spec = [tf.TensorSpec([None], tf.float32)]
        frames_spec = [tf.TensorSpec([None, cfg.num_mel_bins], tf.float32)]
        self._head = tf.function(self._head_db, input_signature=waveform_spec)
        self._tail = tf.function(self._tail_db, input_signature=waveform_spec)
        self._chunk_power = tf.function(
            self._chunk, input_signature=[tf.TensorSpec([self.chunk_samples], tf.float32)], jit_compile=True
        )
        # dB outside XLA: XLA's CPU log is several times slower than TensorFlow's kernel.
        self._to_db = tf.function(self._db, input_signature=frames_spec)
        self._floor = tf.function(self._floor_db, input_signature=frames_spec)

    def _general_db(self, waveform: tf.Tensor) -> tf.Tensor:
        count = frame_count(tf.shape(waveform)[-1], self.cfg)
        return power_to_db(mel_power_from_padded(pad_waveform(waveform, self.cfg), count, self.cfg))

    def _head_db(self, waveform: tf.Tensor) -> tf.Tensor:
        return self._general_db(waveform)[: self.first_inner]

    def _tail_db(self, waveform: tf.Tensor) -> tf.Tensor:
        return self._general_db(waveform)[self.first_inner :]

    def _db(self, power: tf.Tensor) -> tf.Tensor:
        return power_to_db(power)

    def _floor_db(self, db: tf.Tensor) -> tf.Tensor:
        return floor_db(db, self.cfg.top_db)

    def _chunk(self, raw: tf.Tensor) -> tf.Tensor:
        # raw[0] is the sample before the chunk: pre-emphasis needs it.
        emphasized = raw[1:] - float(self.cfg.preemphasis) * raw[:-1]
        return mel_power_from_padded(emphasized, self.CHUNK_FRAMES, self.cfg)

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        n = waveform.size
        # Last frame whose window ends inside the waveform.
        last_inner = (n - self.win + self.left) // self.hop
        inner_count = last_inner + 1 - self.first_inner
        if inner_count < self.CHUNK_FRAMES:
            return front_end(self.cfg)(tf.constant(waveform)).numpy()

        def head() -> np.ndarray:
            return self._head(waveform[: min(n, self.first_inner * self.hop - self.left + self.win)]).numpy()

        def chunk(start_frame: int) -> np.ndarray:
            begin = start_frame * self.hop - self.left - 1
            raw = waveform[begin : begin + self.chunk_samples]
            if raw.size < self.chunk_samples:
                raw = np.concatenate([raw, np.zeros(self.chunk_samples - raw.size, np.float32)])
            return self._to_db(self._chunk_power(raw)).numpy()

        def tail() -> np.ndarray:
            # Starts on a frame boundary, early enough that the slice's own first
            # (edge-affected) frames precede the frames taken from it.
            return self._tail(waveform[inner_count * self.hop :]).numpy()

        pool = _thread_pool()
        pieces = [pool.submit(head)]
        pieces += [pool.submit(chunk, start) for start in range(self.first_inner, last_inner + 1, self.CHUNK_FRAMES)]
        pieces.append(pool.submit(tail))
        parts = [piece.result() for piece in pieces]
        parts[-2] = parts[-2][: inner_count - (len(parts) - 3) * self.CHUNK_FRAMES]
        db = np.concatenate(parts)
        return db if self.cfg.top_db is None else self._floor(db).numpy()


def _numpy_log_mel(cfg: AudioConfig) -> _NumpyLogMel:
    key = dataclasses.astuple(cfg)
    with _CACHE_LOCK:
        fast = _FAST_PATHS.get(key)
        if fast is None:
            fast = _NumpyLogMel(dataclasses.replace(cfg))
            _FAST_PATHS[key] = fast
    return fast


def validate_waveform(waveform: Union[np.ndarray, Any]) -> np.ndarray:
    """Checks a numpy waveform and returns it as contiguous float32.

    Args:
      waveform: array-like (samples,).

    Returns:
      float32 (samples,).

    Raises:
      ValueError: if it is not 1-D, is empty, or holds NaN or Inf (the message says
        how many and where the first one is).
    """
    array = np.asarray(waveform)
    if array.ndim != 1:
        raise ValueError(f"waveform must be 1-D (samples,), got shape {array.shape}.")
    if array.size == 0:
        raise ValueError("waveform is empty (0 samples); the front-end needs at least one sample.")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ValueError(f"waveform must be real numbers, got dtype {array.dtype}.")
    array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"waveform holds {bad.size} non-finite value(s) (NaN or Inf), the first at sample {bad[0]} "
            f"({array[bad[0]]})."
        )
    return array


def compute_log_mel_numpy(waveform: np.ndarray, cfg: Optional[AudioConfig] = None) -> np.ndarray:
    """Log-Mel frames of a numpy waveform through the compiled front-end (for Beam workers).

    Equal to `log_mel` (to float32 rounding, ~1e-4 dB): waveforms of up to about
    20 s go through one traced graph (`front_end(cfg)`); longer ones through
    XLA-compiled fixed-size chunks (see `_NumpyLogMel`). Both are built once per
    configuration and process.

    Args:
      waveform: (samples,) mono at `cfg.sample_rate`.
      cfg: the front-end configuration; AVLnet defaults when None.

    Returns:
      float32 (num_frames(samples, cfg), cfg.num_mel_bins) dB.

    Raises:
      ValueError: if the waveform is not 1-D, is empty, or is not finite.
    """
    array = validate_waveform(waveform)
    return _numpy_log_mel(cfg or AudioConfig())(array)


def compute_mfcc_numpy(waveform: np.ndarray, cfg: Optional[AudioConfig] = None) -> np.ndarray:
    """MFCC frames (num_frames, mfcc_dim(cfg)) of a numpy waveform (same checks as `compute_log_mel_numpy`)."""
    cfg = cfg or AudioConfig()
    return mfcc(compute_log_mel_numpy(waveform, cfg), cfg).numpy()
