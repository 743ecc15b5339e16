"""Speech synthesis with eSpeak NG, loaded from the espeakng-loader wheel through ctypes."""

from __future__ import annotations

import ctypes
import logging
import multiprocessing.util
import os
import shutil
import tempfile
import threading
from typing import Optional

import numpy as np

# avalign language code -> eSpeak NG voice name (a file under espeak-ng-data/lang).
# Japanese is read from kana only: eSpeak NG's Japanese rules do not cover kanji.
VOICES = {"en": "en-us", "mr": "mr", "hi": "hi", "ja": "ja"}
SUPPORTED_LANGUAGES = tuple(VOICES)

# Voice variants (timbres), adapted from eSpeak NG's m1, m3, f1 and f4 without
# echo or breath and with pitch flutter and roughness switched off (appended
# below): those carry state from one utterance to the next inside the library,
# so the same call would not return the same samples in processes that have
# said different things before.
_VARIANT_FILES = {
    "male1": """
        gender male 70
        pitch 75 109
        consonants 80 100
        formant 0  98 100 100
        formant 1  97 100 100
        formant 2  97  95 100
        formant 3  97  95 100
        formant 4  97  85 100
        formant 5 105  80 100
        formant 6  95  80 100
    """,
    "male2": """
        gender male
        pitch 80 122
        formant 1  96  97 100
        formant 2  96  97 100
        formant 3  96 103 100
        formant 4  95 103 100
        formant 5  95 103 100
        stressAdd 10 10 0 0 0 0 -30 -30
    """,
    "female1": """
        gender female 70
        pitch 140 200
        formant 0 115  80 150
        formant 1 120  80 180
        formant 2 100  70 150  150
        formant 3 115  70 150
        formant 4 110  80 150
        formant 5 110  90 150
        formant 6 105  80 150
        formant 7 110  70 150
        formant 8 110  70 150
        stressAdd -10 -10 -20 -20 0 0 40 60
    """,
    "female2": """
        gender female
        pitch 142 200
        formant 0 120  80 150
        formant 1 115  80 160 -20
        formant 2 130  75 150 -200
        formant 3 123  75 150
        formant 4 125  80 150
        formant 5 125  80 150
        formant 6 110  80 150
        formant 7 110  75 150
        formant 8 110  75 150
        stressAdd -20 -20 -20 -20 0 0 20 120
    """,
}
VARIANTS = tuple(_VARIANT_FILES)

# eSpeak NG speaks words per minute in [80, 450] and pitch in [0, 100].
RATE_RANGE = (80, 450)
PITCH_RANGE = (0, 100)

# Constants of speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

# eSpeak NG keeps one global synthesizer per process; every call into it holds this lock.
_LOCK = threading.Lock()
_ENGINE: Optional["_Engine"] = None


def _reset_after_fork() -> None:
    # A forked child must not inherit a lock held by another thread of its parent,
    # nor an engine whose callback buffers belong to the parent.
    global _LOCK, _ENGINE
    _LOCK = threading.Lock()
    _ENGINE = None


os.register_at_fork(after_in_child=_reset_after_fork)


def _remove_tree(root: str, owner: int) -> None:
    if os.getpid() == owner:  # Not from a forked child of the owner.
        shutil.rmtree(root, ignore_errors=True)


def _private_data_dir(data_path: str) -> str:
    """A temporary copy of the wheel's espeak-ng-data (symbolic links) with avalign's voice variants added.

    The wheel's own directory is left untouched; the copy is removed when the
    process that made it exits.
    """
    if not os.path.isdir(os.path.join(data_path, "voices", "!v")):
        raise RuntimeError(f"{data_path!r} is not an espeak-ng-data directory (no voices/!v inside).")
    root = tempfile.mkdtemp(prefix="avalign-espeak-")
    # A multiprocessing finalizer runs at the normal exit of the main process and of
    # pool workers alike (atexit does not run in the latter).
    multiprocessing.util.Finalize(None, _remove_tree, args=(root, os.getpid()), exitpriority=0)
    for name in os.listdir(data_path):
        if name != "voices":
            os.symlink(os.path.join(data_path, name), os.path.join(root, name))
    variants = os.path.join(root, "voices", "!v")
    os.makedirs(variants)
    for name in os.listdir(os.path.join(data_path, "voices")):
        if name != "!v":
            os.symlink(os.path.join(data_path, "voices", name), os.path.join(root, "voices", name))
    for name in os.listdir(os.path.join(data_path, "voices", "!v")):
        os.symlink(os.path.join(data_path, "voices", "!v", name), os.path.join(variants, name))
    for name, body in _VARIANT_FILES.items():
        lines = [line.strip() for line in body.strip().splitlines()]
        text = "\n".join(["language variant", f"name avalign-{name}", *lines, "flutter 0", "roughness 0", ""])
        with open(os.path.join(variants, f"avalign-{name}"), "w", encoding="utf-8") as f:
            f.write(text)
    return root


class _Engine:
    """The process-wide eSpeak NG library, initialized for synchronous retrieval."""

    def __init__(self, library_path: str, data_path: str):
        self.data_dir = _private_data_dir(data_path)
        self.lib = ctypes.CDLL(library_path)
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetSynthCallback.restype = None
        self.lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        self.lib.espeak_SetVoiceByName.restype = ctypes.c_int
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.restype = ctypes.c_int
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.restype = ctypes.c_int
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        self.lib.espeak_Synchronize.restype = ctypes.c_int
        rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 500, self.data_dir.encode("utf-8"), _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (returned {rate}) with data path {self.data_dir!r}.")
        self.sample_rate = rate
        self._chunks: list[np.ndarray] = []
        # Keep a reference: ctypes frees the trampoline when the Python object dies.
        self._callback = _SYNTH_CALLBACK(self._collect)
        self.lib.espeak_SetSynthCallback(self._callback)
        self._voice = ""
        logging.info("eSpeak NG initialized from %s (%d Hz).", library_path, rate)

    def _collect(self, wav, num_samples, events) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # 0 = continue synthesis.

    def set_voice(self, voice: str) -> None:
        """Selects a voice by eSpeak NG name, e.g. 'mr+avalign-female1'."""
        if voice == self._voice:
            return
        err = self.lib.espeak_SetVoiceByName(voice.encode("utf-8"))
        if err != _EE_OK:
            raise RuntimeError(
                f"eSpeak NG has no voice {voice!r} (error {err}); check {self.data_dir}/lang and voices/!v."
            )
        self._voice = voice

    def synth(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        """Speaks `text` with `voice`; returns int16 samples at self.sample_rate."""
        self.set_voice(voice)
        for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_VOLUME, 100), (_PARAM_RANGE, 50)):
            self.lib.espeak_SetParameter(param, value, 0)
        data = text.encode("utf-8") + b"\0"
        self._chunks = []
        err = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if err != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with error {err} for text {text!r}.")
        chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.zeros(0, np.int16)
        return np.concatenate(chunks)


def _engine() -> _Engine:
    """Returns this process's engine, loading the library on first use (call under _LOCK)."""
    global _ENGINE
    if _ENGINE is None:
        import espeakng_loader

        _ENGINE = _Engine(espeakng_loader.get_library_path(), espeakng_loader.get_data_path())
    return _ENGINE


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of a short 1-D signal in the frequency domain.

    The signal is zero-padded before the FFT so that its end does not wrap onto
    its start, and the spectrum is tapered over the top 5 % below the lower
    Nyquist frequency to limit ringing.

    Args:
      x: 1-D float signal.
      rate_in: its sample rate in Hz.
      rate_out: the wanted sample rate in Hz.

    Returns:
      float32 signal of round(len(x) * rate_out / rate_in) samples.

    Raises:
      ValueError: a rate is not positive or `x` is not 1-D.
    """
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"Sample rates must be > 0, got {rate_in} -> {rate_out}.")
    x = np.asarray(x, np.float64)
    if x.ndim != 1:
        raise ValueError(f"resample takes a 1-D signal, got shape {x.shape}.")
    if rate_in == rate_out or x.size == 0:
        return x.astype(np.float32)
    n_out = int(round(x.size * rate_out / rate_in))
    pad = int(0.05 * rate_in) + 16
    n = x.size + pad
    m = int(round(n * rate_out / rate_in))
    spec = np.fft.rfft(x, n)
    keep = min(spec.size, m // 2 + 1)
    taper = np.ones(keep)
    edge = max(1, int(0.05 * keep))
    taper[-edge:] = 0.5 * (1 + np.cos(np.linspace(0, np.pi, edge)))
    out_spec = np.zeros(m // 2 + 1, np.complex128)
    out_spec[:keep] = spec[:keep] * taper
    y = np.fft.irfft(out_spec, m) * (m / n)
    return y[:n_out].astype(np.float32)


class Speaker:
    """Synthesizes speech in the supported languages with eSpeak NG.

    eSpeak NG is a process-global C library: all Speakers of a process share one
    engine behind a lock, and each process (e.g. each multiprocessing worker)
    initializes its own on first use.

    Args:
      sample_rate: Hz of the returned waveforms (eSpeak NG renders 22050 Hz,
        which is resampled).
    """

    def __init__(self, sample_rate: int = 16000):
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {sample_rate}.")
        self.sample_rate = sample_rate

    def synthesize(
        self, text: str, language: str, rate: int = 160, pitch: int = 50, variant: str = VARIANTS[0]
    ) -> np.ndarray:
        """Speaks `text` in `language`.

        The same arguments give the same samples in any process, whatever it
        synthesized before (see _VARIANT_FILES).

        Args:
          text: UTF-8 text in the language's script (Japanese in kana).
          language: one of SUPPORTED_LANGUAGES.
          rate: speed in words per minute, within RATE_RANGE.
          pitch: pitch within PITCH_RANGE (50 is the middle of the variant's range).
          variant: timbre, one of VARIANTS.

        Returns:
          float32 mono waveform in [-1, 1] at `self.sample_rate`, with leading
          and trailing silence removed.

        Raises:
          ValueError: unknown language or variant, empty text, or rate / pitch out of range.
          RuntimeError: the eSpeak NG library or the voice's data cannot be used.
        """
        if language not in VOICES:
            raise ValueError(f"Unknown language {language!r}; supported: {', '.join(SUPPORTED_LANGUAGES)}.")
        if not text or not text.strip():
            raise ValueError(f"Nothing to say: text is {text!r}.")
        if variant not in _VARIANT_FILES:
            raise ValueError(f"Unknown voice variant {variant!r}; valid: {', '.join(VARIANTS)}.")
        if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
            raise ValueError(f"rate must be in {list(RATE_RANGE)} words per minute, got {rate}.")
        if not PITCH_RANGE[0] <= pitch <= PITCH_RANGE[1]:
            raise ValueError(f"pitch must be in {list(PITCH_RANGE)}, got {pitch}.")
        with _LOCK:
            engine = _engine()
            pcm = engine.synth(text, f"{VOICES[language]}+avalign-{variant}", int(rate), int(pitch))
            native_rate = engine.sample_rate
        wav = _trim(pcm.astype(np.float32) / 32768.0)
        if wav.size == 0:
            raise RuntimeError(f"eSpeak NG produced no audio for {text!r} in {language!r}.")
        return np.clip(resample(wav, native_rate, self.sample_rate), -1.0, 1.0)


def _trim(wav: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Drops leading and trailing samples quieter than `threshold`."""
    loud = np.flatnonzero(np.abs(wav) > threshold)
    if loud.size == 0:
        return wav[:0]
    return wav[loud[0] : loud[-1] + 1]
