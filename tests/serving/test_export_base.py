"""ExportModule and export(): signatures, versions, atomic writes, metadata, core ops only."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from avalign import export_util
from serving import export_base
from tests.serving.conftest import graph_ops

FEATURES = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], "float32")


class DenseModule(export_base.ExportModule):
    """Normalization (preprocessor) then a Dense layer; 'features' gives logits, 'tempered' softmax(logits / T)."""

    default_function_keys = {"features": "serving_default", "tempered": "tempered"}

    def __init__(self, seed: int = 0, **params):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((3,), name="features")
        model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(inputs), name="tiny_dense")
        normalize = keras.layers.Normalization(mean=[1.0, 0.0, -1.0], variance=[4.0, 1.0, 0.25])
        # Built now, eagerly: built inside a traced signature, its statistics would be graph tensors that can't be saved.
        normalize.build((None, 3))
        super().__init__(
            {"mean": [1.0, 0.0, -1.0], "units": 2, **params}, model, preprocessor=normalize, name="dense_module"
        )

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def predict(self, features):
        return self.serve(features)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([], tf.float32)])
    def predict_tempered(self, features, temperature):
        return {"probabilities": tf.nn.softmax(self.serve(features)["logits"] / temperature)}

    def serve(self, features):
        return {"logits": self.inference_step(self.preprocessor(features))}

    def functions(self):
        return {"features": self.predict, "tempered": self.predict_tempered}


def _versions(base) -> list[str]:
    return sorted(os.listdir(base))


def test_each_signature_gives_the_in_memory_outputs(tmp_path):
    module = DenseModule()
    path = export_base.export(module, str(tmp_path / "dense"))
    assert path == str(tmp_path / "dense" / "1")
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {"serving_default", "tempered"}

    logits = module.model(module.preprocessor(FEATURES)).numpy()
    # Hand-computed: the preprocessor runs in the graph, so clients send raw features.
    kernel, bias = (w.numpy() for w in module.model.get_layer("logits").weights)
    np.testing.assert_allclose(logits, (FEATURES - [1.0, 0.0, -1.0]) / [2.0, 1.0, 0.5] @ kernel + bias, rtol=1e-5)
    served = loaded.signatures["serving_default"](features=tf.constant(FEATURES))
    np.testing.assert_allclose(served["logits"], logits, rtol=1e-6)
    tempered = loaded.signatures["tempered"](features=tf.constant(FEATURES), temperature=tf.constant(2.0))
    np.testing.assert_allclose(tempered["probabilities"], tf.nn.softmax(logits / 2.0), rtol=1e-6)
    np.testing.assert_allclose(loaded.predict(FEATURES)["logits"], logits, rtol=1e-6)


def test_signature_keys_follow_the_function_keys_given(tmp_path):
    path = export_base.export(DenseModule(), str(tmp_path / "dense"), function_keys={"tempered": "serving_default"})
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures["serving_default"].structured_outputs) == {"probabilities"}
    assert export_base.read_metadata(path)["signatures"]["serving_default"]["function_key"] == "tempered"


def test_versions_count_up_and_never_overwrite(tmp_path):
    base = tmp_path / "dense"
    paths = [export_base.export(DenseModule(seed), str(base)) for seed in (1, 2, 3)]
    assert paths == [str(base / v) for v in ("1", "2", "3")]
    # Version 1 still holds the first model, not a later one.
    first = DenseModule(1)
    want = first.model(first.preprocessor(FEATURES)).numpy()
    loaded = tf.saved_model.load(paths[0])
    np.testing.assert_allclose(loaded.predict(FEATURES)["logits"], want, rtol=1e-6)
    # Names that aren't integers are not versions; the highest integer is.
    (base / "10").mkdir()
    (base / "latest").mkdir()
    assert export_base.export(DenseModule(), str(base)) == str(base / "11")
    assert not os.listdir(base / "10")


def test_a_version_taken_while_renaming_is_not_overwritten(tmp_path, monkeypatch):
    base = tmp_path / "dense"
    export_base.export(DenseModule(), str(base))
    listed = export_util.next_version_dir

    def raced(path):
        version = listed(path)
        if not (base / "2").exists():
            # Another exporter publishes version 2 after this one listed the base.
            (base / "2").mkdir()
            (base / "2" / "theirs").write_text("another export")
        return version

    monkeypatch.setattr(export_util, "next_version_dir", raced)
    assert export_base.export(DenseModule(), str(base)) == str(base / "3")
    assert os.listdir(base / "2") == ["theirs"]
    assert _versions(base) == ["1", "2", "3"]


def test_an_unknown_function_key_raises_naming_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"no function key\(s\) \['image'\]; valid keys: \['features', 'tempered'\]"):
        export_base.export(DenseModule(), str(tmp_path / "dense"), function_keys={"image": "serving_default"})
    with pytest.raises(ValueError, match="'serving_default' is given to more than one function key"):
        DenseModule().get_inference_signatures({"features": "serving_default", "tempered": "serving_default"})
    with pytest.raises(ValueError, match=r"No function keys given: nothing to serve; valid keys: \['features'"):
        export_base.export(DenseModule(), str(tmp_path / "dense"), function_keys={})
    assert not (tmp_path / "dense").exists()


def test_a_failed_save_leaves_no_version_and_the_next_export_numbers_on(tmp_path, monkeypatch):
    base = tmp_path / "dense"
    export_base.export(DenseModule(), str(base))
    real_save = tf.saved_model.save

    def save_then_fail(obj, export_dir, signatures=None, options=None):
        real_save(obj, export_dir, signatures=signatures, options=options)
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        export_base.export(DenseModule(), str(base))
    assert _versions(base) == ["1"]
    monkeypatch.undo()
    assert export_base.export(DenseModule(), str(base)) == str(base / "2")


def test_a_kill_mid_export_leaves_only_a_name_readers_ignore(tmp_path):
    base = tmp_path / "dense"
    # What a killed export leaves: a partly written temporary directory.
    (base / ".partial-0123").mkdir(parents=True)
    (base / ".partial-0123" / "saved_model.pb").write_bytes(b"half")
    with pytest.raises(FileNotFoundError):
        export_util.latest_version_dir(str(base))
    assert export_base.export(DenseModule(), str(base)) == str(base / "1")


def test_the_metadata_records_what_made_the_export(tmp_path):
    module = DenseModule()
    path = export_base.export(module, str(tmp_path / "dense"), metadata={"task": "demo", "config_sha256": "ab12"})
    assert os.path.isfile(os.path.join(path, "assets.extra", "avalign.json"))
    meta = export_base.read_metadata(path)
    assert meta["model"] == "tiny_dense"
    assert meta["module"] == f"{DenseModule.__module__}.DenseModule"
    assert meta["params"] == {"mean": [1.0, 0.0, -1.0], "units": 2}
    assert meta["metadata"] == {"task": "demo", "config_sha256": "ab12"}
    assert meta["tensorflow"] == tf.__version__
    assert meta["signatures"] == {
        "serving_default": {
            "function_key": "features",
            "inputs": {"features": {"dtype": "float32", "shape": [None, 3]}},
            "outputs": {"logits": {"dtype": "float32", "shape": [None, 2]}},
        },
        "tempered": {
            "function_key": "tempered",
            "inputs": {
                "features": {"dtype": "float32", "shape": [None, 3]},
                "temperature": {"dtype": "float32", "shape": []},
            },
            "outputs": {"probabilities": {"dtype": "float32", "shape": [None, 2]}},
        },
    }


def test_params_and_metadata_must_be_json(tmp_path):
    with pytest.raises(TypeError, match="not JSON serializable"):
        export_base.export(DenseModule(), str(tmp_path / "dense"), metadata={"when": object()})
    assert not (tmp_path / "dense").exists()
    with pytest.raises(TypeError, match="not JSON serializable"):
        DenseModule(when=object())


def test_every_op_in_the_export_is_a_core_tf_op(tmp_path, core_ops_only):
    path = export_base.export(DenseModule(), str(tmp_path / "dense"))
    assert {"MatMul", "StatefulPartitionedCall"} <= set(core_ops_only(path))


def test_the_op_check_reports_an_op_tf_does_not_have(tmp_path):
    path = export_base.export(DenseModule(), str(tmp_path / "dense"))
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((tmp_path / "dense" / "1" / "saved_model.pb").read_bytes())
    node = next(n for f in saved.meta_graphs[0].graph_def.library.function for n in f.node_def if n.op == "MatMul")
    node.op = "IO>AudioDecodeWAV"  # a tensorflow_io op: registered only once tensorflow_io is imported
    (tmp_path / "dense" / "1" / "saved_model.pb").write_bytes(saved.SerializeToString())
    assert graph_ops(path)["unregistered"] == ["IO>AudioDecodeWAV"]
