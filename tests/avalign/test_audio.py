"""The audio front-end against librosa, in graph mode, batched, exported, and its numpy path."""

import librosa
import numpy as np
import pytest
import scipy.signal
import tensorflow as tf

from avalign import audio
from avalign.audio import AudioConfig
from bench import librosa_reference as audio_reference
from tests.signals import SR, tones_chirp_noise

# Measured max |ours - librosa| is ~2e-4 dB (float32 FFTs on both sides); the bound leaves 50x room.
DB_TOLERANCE = 0.01
# MFCCs are ~1e2 in scale; measured max difference ~1e-4 (cepstrum, deltas and delta-deltas alike).
MFCC_TOLERANCE = 0.005


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    return tones_chirp_noise()


def test_sizes_follow_the_config():
    cfg = AudioConfig()
    assert (audio.window_length(cfg), audio.hop_length(cfg), audio.fft_length(cfg)) == (400, 160, 512)
    assert audio.num_frames(48000, cfg) == 301
    assert audio.num_frames(0, cfg) == 1
    with pytest.raises(ValueError, match="n_fft=256"):
        audio.fft_length(AudioConfig(n_fft=256))
    with pytest.raises(ValueError, match="-1"):
        audio.num_frames(-1, cfg)


@pytest.mark.parametrize("n_fft", [512, 513, 1024])
def test_mel_matrix_matches_librosa(n_fft):
    cfg = AudioConfig(n_fft=n_fft)
    reference = librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=40, fmin=20.0, fmax=8000.0, htk=False, norm="slaney")
    ours = audio.mel_matrix(cfg)
    assert ours.shape == (n_fft // 2 + 1, 40)
    np.testing.assert_allclose(ours, reference.T, rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="Nyquist"):
        audio.mel_matrix(AudioConfig(fmax=9000.0))


def test_log_mel_matches_librosa(signal):
    cfg = AudioConfig()
    power = audio_reference.mel_power(signal, cfg)
    reference = audio_reference.power_to_db(power, cfg)
    ours = audio.log_mel(tf.constant(signal), cfg).numpy()
    assert ours.dtype == np.float32
    assert ours.shape == reference.shape == (audio.num_frames(signal.size, cfg), 40) == (301, 40)
    above_floor = power > 1e-10
    assert above_floor.mean() > 0.99
    assert np.max(np.abs(ours - reference)[above_floor]) < DB_TOLERANCE


@pytest.mark.parametrize(
    "cfg",
    [
        AudioConfig(sample_rate=22050, window_seconds=0.032, hop_seconds=0.008, num_mel_bins=64, n_fft=1023),
        AudioConfig(preemphasis=0.0, fmin=0.0, fmax=7000.0),
    ],
)
def test_other_configurations_match_librosa(cfg):
    y = librosa.resample(tones_chirp_noise(2.0), orig_sr=SR, target_sr=cfg.sample_rate).astype(np.float32)
    reference = audio_reference.log_mel(y, cfg)
    ours = audio.log_mel(tf.constant(y), cfg).numpy()
    assert ours.shape == reference.shape == (audio.num_frames(y.size, cfg), cfg.num_mel_bins)
    assert np.max(np.abs(ours - reference)) < DB_TOLERANCE


@pytest.mark.filterwarnings("ignore:n_fft=512 is too large")
@pytest.mark.parametrize("length", [1, 2, 5, 150, 300, 401, 16001])
def test_short_waveforms_match_librosa(length):
    cfg = AudioConfig()
    y = np.random.default_rng(length).standard_normal(length).astype(np.float32) * 0.1
    reference = audio_reference.log_mel(y, cfg)
    ours = audio.log_mel(tf.constant(y), cfg).numpy()
    assert ours.shape == reference.shape == (audio.num_frames(length, cfg), 40)
    assert np.max(np.abs(ours - reference)) < DB_TOLERANCE


def test_empty_waveform_in_graph_gives_one_floor_frame():
    out = audio.log_mel(tf.zeros([0]), AudioConfig()).numpy()
    assert out.shape == (1, 40)
    np.testing.assert_allclose(out, -100.0)


def test_top_db_matches_librosa(signal):
    cfg = AudioConfig(top_db=30.0)
    reference = audio_reference.log_mel(signal, cfg)
    ours = audio.log_mel(tf.constant(signal), cfg).numpy()
    assert np.max(np.abs(ours - reference)) < DB_TOLERANCE
    assert ours.min() == pytest.approx(ours.max() - 30.0, abs=1e-4)


def test_mfcc_matches_librosa(signal):
    cfg = AudioConfig()
    db = audio_reference.log_mel(signal, cfg)
    cepstrum = librosa.feature.mfcc(S=db.T, n_mfcc=13)
    reference = np.concatenate(
        [cepstrum, librosa.feature.delta(cepstrum, order=1), librosa.feature.delta(cepstrum, order=2)]
    ).T
    ours = audio.mfcc(audio.log_mel(tf.constant(signal), cfg), cfg).numpy()
    assert ours.shape == (301, 39) == (301, audio.mfcc_dim(cfg))
    assert np.max(np.abs(ours - reference)) < MFCC_TOLERANCE
    plain = audio.mfcc(tf.constant(db), AudioConfig(mfcc_deltas=False)).numpy()
    np.testing.assert_allclose(plain, cepstrum.T, atol=1e-3)


def test_delta_of_short_input_is_nearest_padded_savitzky_golay():
    x = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
    for order in (1, 2):
        ours = audio.delta(tf.constant(x), order=order).numpy()
        reference = scipy.signal.savgol_filter(x, 9, order, deriv=order, axis=0, mode="nearest")
        np.testing.assert_allclose(ours, reference, atol=1e-5)
    with pytest.raises(ValueError, match="width"):
        audio.delta(tf.constant(x), width=4)
    with pytest.raises(ValueError, match="num_mfcc"):
        audio.mfcc(tf.zeros([3, 40]), AudioConfig(num_mfcc=41))
    with pytest.raises(ValueError, match="32 bins"):
        audio.mfcc(tf.zeros([3, 32]), AudioConfig())


def test_batch_equals_each_example(signal):
    cfg = AudioConfig()
    batch = np.stack([signal[:16000], signal[16000:32000] * 0.5, signal[32000:48000]])
    out = audio.log_mel(tf.constant(batch), cfg).numpy()
    assert out.shape == (3, 101, 40)
    for i in range(3):
        np.testing.assert_allclose(out[i], audio.log_mel(tf.constant(batch[i]), cfg).numpy(), atol=1e-4)
    features = audio.mfcc(tf.constant(out), cfg).numpy()
    assert features.shape == (3, 101, 39)
    np.testing.assert_allclose(features[1], audio.mfcc(tf.constant(out[1]), cfg).numpy(), atol=1e-4)


def test_graph_mode_with_unknown_length_traces_once(signal):
    cfg = AudioConfig()
    fn = tf.function(
        lambda w: audio.mfcc(audio.log_mel(w, cfg), cfg), input_signature=[tf.TensorSpec([None, None], tf.float32)]
    )
    for length in (4000, 12345):
        batch = tf.constant(np.stack([signal[:length], signal[1000 : 1000 + length]]))
        out = fn(batch).numpy()
        assert out.shape == (2, audio.num_frames(length, cfg), 39)
        np.testing.assert_allclose(out, audio.mfcc(audio.log_mel(batch, cfg), cfg).numpy(), atol=1e-3)
    assert fn.experimental_get_tracing_count() == 1


def test_saved_model_round_trip(tmp_path, signal):
    cfg = AudioConfig(num_mel_bins=32, fmin=40.0)
    module = audio.LogMelFrontEnd(cfg)
    expected = module(tf.constant(signal)).numpy()
    assert expected.shape == (301, 32)
    tf.saved_model.save(module, str(tmp_path / "frontend"))
    loaded = tf.saved_model.load(str(tmp_path / "frontend"))
    np.testing.assert_array_equal(loaded(tf.constant(signal)).numpy(), expected)
    batch = np.stack([signal, signal[::-1].copy()])
    np.testing.assert_array_equal(
        loaded.batch(tf.constant(batch)).numpy()[0], module.batch(tf.constant(batch)).numpy()[0]
    )
    assert int(loaded.num_mel_bins) == 32 and float(loaded.frame_rate) == pytest.approx(100.0)
    np.testing.assert_array_equal(loaded(tf.constant(signal[:999])).numpy(), module(tf.constant(signal[:999])).numpy())


@pytest.mark.parametrize("seconds", [0.3, 25.0])
def test_numpy_path_equals_graph(seconds):
    # 25 s takes the chunked XLA path: head frames, a full and a partial 2048-frame chunk, tail frames.
    cfg = AudioConfig()
    y = tones_chirp_noise(seconds, seed=1)
    ours = audio.compute_log_mel_numpy(y, cfg)
    assert ours.shape == (audio.num_frames(y.size, cfg), 40)
    np.testing.assert_allclose(ours, audio.log_mel(tf.constant(y), cfg).numpy(), atol=2e-3)
    mfccs = audio.compute_mfcc_numpy(y, cfg)
    assert mfccs.shape == (ours.shape[0], 39)


def test_numpy_path_top_db_is_global_across_chunks():
    cfg = AudioConfig(top_db=20.0)
    y = tones_chirp_noise(25.0, seed=2)
    y[: SR * 10] *= 1e-3
    ours = audio.compute_log_mel_numpy(y, cfg)
    np.testing.assert_allclose(ours, audio.log_mel(tf.constant(y), cfg).numpy(), atol=2e-3)


@pytest.mark.parametrize(
    "waveform, message",
    [
        (np.zeros((2, 100), np.float32), r"1-D.*\(2, 100\)"),
        (np.zeros(0, np.float32), "empty"),
        (np.array([0.0, np.nan, 1.0, np.inf], np.float32), "2 non-finite.*sample 1"),
        (np.array(["a", "b"]), "real numbers"),
    ],
)
def test_numpy_path_rejects_bad_waveforms(waveform, message):
    with pytest.raises(ValueError, match=message):
        audio.compute_log_mel_numpy(waveform)
