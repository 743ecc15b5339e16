"""A frozen TF Hub / SavedModel audio embedding as the Beam job's audio extractor."""

import numpy as np
import pytest
import tensorflow as tf

from preprocessing import audio_embedding
from tests.signals import tones_chirp_noise


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    return tones_chirp_noise()


class _TinyAudioModel(tf.Module):
    """A YAMNet-shaped model: 0.96 s windows every 0.48 s -> (scores, embeddings, spectrogram)."""

    def __init__(self, dim: int = 6):
        super().__init__()
        rng = np.random.default_rng(0)
        self.projection = tf.Variable(rng.standard_normal((15360, dim)).astype(np.float32) * 0.01)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def __call__(self, waveform):
        frames = tf.signal.frame(waveform, 15360, 7680, pad_end=True)
        embeddings = tf.matmul(frames, self.projection)
        return tf.nn.softmax(embeddings), embeddings, tf.abs(frames[:, :16])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="waveform")])
    def outputs(self, waveform):
        scores, embeddings, _ = self.__call__(waveform)
        return {"scores": scores, "embeddings": embeddings}


@pytest.fixture(scope="module")
def tiny_hub_model(tmp_path_factory):
    model = _TinyAudioModel()
    path = str(tmp_path_factory.mktemp("hub") / "tiny_audio")
    tf.saved_model.save(model, path, signatures={"serving_default": model.outputs})
    return path, model


def test_hub_embedding_selects_outputs(tiny_hub_model, signal):
    path, model = tiny_hub_model
    expected = model(tf.constant(signal))[1].numpy()
    assert expected.shape == (7, 6)  # 48000 samples, 7680 hop, padded end.

    embeddings, rate = audio_embedding.HubAudioEmbedding(path, output_key=1)(signal)
    np.testing.assert_allclose(embeddings, expected, rtol=1e-5, atol=1e-6)
    assert rate == pytest.approx(1 / 0.48)

    by_signature = audio_embedding.HubAudioEmbedding(path, output_key="embeddings", signature="serving_default")
    np.testing.assert_allclose(by_signature(signal)[0], expected, rtol=1e-5, atol=1e-6)


def test_hub_embedding_single_tensor_model(tmp_path, signal):
    class Single(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, waveform):
            frames = tf.signal.frame(waveform, 8000, 8000)
            return tf.stack([tf.reduce_mean(frames, -1), tf.math.reduce_std(frames, -1)], axis=-1)

    tf.saved_model.save(Single(), str(tmp_path / "single"))
    embeddings, rate = audio_embedding.HubAudioEmbedding(str(tmp_path / "single"), hop_seconds=0.5)(signal)
    assert embeddings.shape == (6, 2) and rate == 2.0
    np.testing.assert_allclose(embeddings[:, 1], signal.reshape(6, 8000).std(axis=1), rtol=1e-4)
    with pytest.raises(ValueError, match="single tensor"):
        audio_embedding.HubAudioEmbedding(str(tmp_path / "single"), output_key=2)(signal)


def test_hub_embedding_errors(tiny_hub_model, tmp_path, signal):
    path, _ = tiny_hub_model
    with pytest.raises(ValueError, match="3 outputs"):
        audio_embedding.HubAudioEmbedding(path)(signal)
    with pytest.raises(ValueError, match="'logits'.*embeddings"):
        audio_embedding.HubAudioEmbedding(path, output_key="logits", signature="serving_default")(signal)
    with pytest.raises(ValueError, match="no signature 'other'"):
        audio_embedding.HubAudioEmbedding(path, signature="other")
    with pytest.raises(ValueError, match="could not load.*missing"):
        audio_embedding.HubAudioEmbedding(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="hop_seconds"):
        audio_embedding.HubAudioEmbedding(path, hop_seconds=0)
    with pytest.raises(ValueError, match="non-finite"):
        audio_embedding.HubAudioEmbedding(path, output_key=1)(np.full(100, np.nan, np.float32))
