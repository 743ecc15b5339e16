"""Tests of the eSpeak NG speaker: real speech in every supported language, and its errors."""

import numpy as np
import pytest

from corpus import tts
from corpus import vocab as corpus_vocab

SENTENCES = {
    "en": "Rotate the striped red circle.",
    "mr": "पट्टेदार लाल वर्तुळ फिरवा.",
    "hi": "धारीदार लाल वृत्त को घुमाइए।",
    "ja": "しまもようの あかい まるを まわして ください。",
}


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@pytest.fixture(scope="module")
def speaker() -> tts.Speaker:
    return tts.Speaker(sample_rate=16000)


def test_every_supported_language_has_a_sentence_here():
    assert set(SENTENCES) == set(tts.SUPPORTED_LANGUAGES)


@pytest.mark.parametrize("language", sorted(SENTENCES))
def test_speaks_each_language(speaker, language):
    wav = speaker.synthesize(SENTENCES[language], language)
    assert wav.dtype == np.float32 and wav.ndim == 1
    seconds = wav.size / 16000
    # A short sentence: neither a click nor letter-by-letter spelling of unknown script.
    assert 0.8 < seconds < 6.0, seconds
    assert np.max(np.abs(wav)) <= 1.0
    assert _rms(wav) > 0.02
    # Speech has pauses and syllables: its 20 ms energy varies a lot over the utterance.
    frames = wav[: wav.size // 320 * 320].reshape(-1, 320)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    assert np.percentile(energy, 90) > 4 * np.percentile(energy, 10)


def test_japanese_kana_is_read_not_spelled(speaker):
    # Kanji are outside eSpeak NG's Japanese rules and get spelled out as "Chinese letter" in English,
    # which is why the corpus passes kana readings: the kana sentence must be much shorter.
    kana = speaker.synthesize("あかい まる", "ja")
    kanji = speaker.synthesize("赤い丸", "ja")
    assert kanji.size > 2 * kana.size


def test_sample_rate_sets_the_length():
    a = tts.Speaker(16000).synthesize("Shake the blue star.", "en")
    b = tts.Speaker(22050).synthesize("Shake the blue star.", "en")
    assert abs(b.size / 22050 - a.size / 16000) < 0.01


def test_same_call_gives_same_samples_whatever_came_before(speaker):
    text = "Slide the dotted blue square across the table."
    first = speaker.synthesize(text, "en", rate=150, pitch=40, variant="female1")
    for language in ("mr", "ja"):
        speaker.synthesize(SENTENCES[language], language, rate=175, pitch=70, variant="male2")
    again = speaker.synthesize(text, "en", rate=150, pitch=40, variant="female1")
    np.testing.assert_array_equal(first, again)


def test_rate_pitch_and_variant_change_the_voice(speaker):
    text = SENTENCES["en"]
    base = speaker.synthesize(text, "en", rate=160, pitch=50, variant="male1")
    slow = speaker.synthesize(text, "en", rate=100, pitch=50, variant="male1")
    assert slow.size > 1.3 * base.size
    other = speaker.synthesize(text, "en", rate=160, pitch=50, variant="female2")
    assert other.size != base.size or not np.array_equal(other, base)


@pytest.mark.parametrize("variant", tts.VARIANTS)
def test_every_variant_speaks(speaker, variant):
    assert _rms(speaker.synthesize(SENTENCES["hi"], "hi", variant=variant)) > 0.02


def test_rejects_unknown_language(speaker):
    with pytest.raises(ValueError, match=r"'fr'.*en, mr, hi, ja"):
        speaker.synthesize("Bonjour.", "fr")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"text": "  "}, "Nothing to say"),
        ({"rate": 20}, "rate must be in"),
        ({"pitch": 101}, "pitch must be in"),
        ({"variant": "robot"}, "Unknown voice variant 'robot'"),
    ],
)
def test_rejects_bad_arguments(speaker, kwargs, message):
    args = {"text": "Hello.", "language": "en", **kwargs}
    with pytest.raises(ValueError, match=message):
        speaker.synthesize(**args)


def test_rejects_bad_sample_rate():
    with pytest.raises(ValueError, match="sample_rate must be > 0, got 0"):
        tts.Speaker(0)


def test_resample_keeps_frequency_and_duration():
    rate_in, rate_out = 22050, 16000
    t = np.arange(rate_in) / rate_in
    tone = np.sin(2 * np.pi * 1000 * t)
    out = tts.resample(tone, rate_in, rate_out)
    assert out.size == rate_out
    spectrum = np.abs(np.fft.rfft(out[1000:-1000]))
    peak_hz = np.argmax(spectrum) * rate_out / (out.size - 2000)
    assert abs(peak_hz - 1000) < 5
    # Amplitude is kept away from the edges.
    assert abs(np.max(np.abs(out[1000:-1000])) - 1.0) < 0.02


def test_resample_rejects_bad_rates():
    with pytest.raises(ValueError, match="Sample rates must be > 0"):
        tts.resample(np.zeros(10), 0, 16000)


def test_every_corpus_language_has_a_voice():
    assert set(corpus_vocab.LANGUAGES) <= set(tts.SUPPORTED_LANGUAGES)
