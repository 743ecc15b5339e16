"""The export base: a `tf.Module` that serves a model on raw inputs, written as a versioned SavedModel."""

from __future__ import annotations

import abc
import datetime
import json
import logging
import os
import uuid
from typing import Any, Callable, Mapping, Optional, Sequence

import keras
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from avalign import export_util, fileio

# Inside the SavedModel, where TF Serving and hub.load ignore it: what made the export.
METADATA_FILE = "avalign.json"
METADATA_DIR = "assets.extra"
# A version taken by another exporter between listing and renaming moves ours to
# the next number; this many tries, then the export fails rather than loop.
_PUBLISH_ATTEMPTS = 5


class ExportModule(tf.Module, metaclass=abc.ABCMeta):
    """A model with what it needs to serve raw inputs, and the signatures that serve them.

    Modelled on TF Model Garden's `official.core.export_base.ExportModule`. A
    subclass implements `serve` (raw inputs -> outputs, the same preprocessing
    as training, in-graph), wraps it and any other entry points in
    `tf.function`s with an `input_signature`, and declares them in
    `functions`; `default_function_keys` names the signature each one is
    exported under.

    Args:
      params: JSON-ready dict of what the model needs to serve (e.g. the audio
        front-end's config); recorded in the export's metadata.
      model: the model; a `keras.Model` is called with `training=False`.
      preprocessor: optional callable (e.g. a `tf.Module`, saved with the
        module) from raw inputs to the model's inputs.
      postprocessor: optional callable from the model's outputs to the served
        outputs.
      name: the module's name.

    Raises:
      TypeError: `params` is not JSON-serializable.
    """

    # function key -> signature key; subclasses set theirs.
    default_function_keys: Mapping[str, str] = {}

    def __init__(
        self,
        params: Mapping[str, Any],
        model: Callable,
        *,
        preprocessor: Optional[Callable] = None,
        postprocessor: Optional[Callable] = None,
        name: Optional[str] = None,
    ):
        super().__init__(name=name)
        self.model = model
        # A Keras 3 variable wraps a tf.Variable that tf.saved_model.save reaches only
        # through the wrapper, and TF1-style loaders (TF Serving's, `saved_model_cli
        # run`) then restore none of them ("Could not find variable"): track the
        # tf.Variables themselves, as keras.export.ExportArchive does.
        self._tf_variables = [getattr(v, "value", v) for v in getattr(model, "variables", [])]
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        # Kept as text, not a dict: tf.Module would wrap a dict for tracking, and
        # a params value that JSON can't hold should fail here, not after the save.
        self._params_json = json.dumps(dict(params), sort_keys=True)

    @property
    def params(self) -> dict[str, Any]:
        """A copy of the params the module was built with."""
        return json.loads(self._params_json)

    def inference_step(self, inputs: Any) -> Any:
        """The model on its own inputs (already preprocessed), in inference mode."""
        if isinstance(self.model, keras.Model):
            return self.model(inputs, training=False)
        return self.model(inputs)

    @abc.abstractmethod
    def serve(self, *inputs: tf.Tensor) -> Mapping[str, tf.Tensor]:
        """The inference step on raw inputs: preprocessing, model, postprocessing.

        Args:
          *inputs: what a client has (waveforms, text, features, records).

        Returns:
          Dict of named output tensors.
        """

    @abc.abstractmethod
    def functions(self) -> Mapping[str, tf.types.experimental.PolymorphicFunction]:
        """The servable `tf.function`s by function key; each has an `input_signature`."""

    def get_inference_signatures(
        self, function_keys: Mapping[str, str]
    ) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """The concrete functions to export, by signature key.

        Args:
          function_keys: function key (see `functions`) -> signature key.

        Returns:
          Dict signature key -> concrete function.

        Raises:
          ValueError: no function key, or one that is not one of `functions`
            (naming the valid ones), or two that share a signature key.
        """
        available = self.functions()
        if not function_keys:
            raise ValueError(f"No function keys given: nothing to serve; valid keys: {sorted(available)}.")
        unknown = sorted(set(function_keys) - set(available))
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no function key(s) {unknown}; valid keys: {sorted(available)}."
            )
        signatures = {}
        for function_key, signature_key in function_keys.items():
            if signature_key in signatures:
                raise ValueError(
                    f"Signature key {signature_key!r} is given to more than one function key in {dict(function_keys)}; "
                    f"give each function its own signature key."
                )
            signatures[signature_key] = available[function_key].get_concrete_function()
        return signatures


def after_checks(checks: Sequence[Optional[tf.Operation]], *tensors: tf.Tensor):
    """`tensors`, computed only once every check (a `tf.debugging.assert_*` op) has passed.

    Inside a `tf.function` an assertion runs, but nothing orders it before the
    ops that use the inputs it checks; an input it refuses could then fail in
    one of those ops first, with a message that names no input. A signature
    passes its inputs through this so that its own messages are the ones a
    client sees.

    Returns:
      The tensor (one given) or a list of them, as identities that depend on the checks.
    """
    with tf.control_dependencies([c for c in checks if c is not None]):
        out = [tf.identity(t) for t in tensors]
    return out[0] if len(out) == 1 else out


def op_error_reason(error: tf.errors.OpError) -> str:
    """What an op error says went wrong, in a line, without TensorFlow's wrapping.

    A signature's failed check gives its message and the values it names
    ("assertion failed: [msg] [values]" -> "msg values"); any other op error
    its first line, without 'Graph execution error:', the 'Detected at node'
    stack, '{{function_node ...}}' and the ' [Op:...]' tail.
    """
    text = error.message or ""
    marker = "assertion failed: "
    if marker in text:
        return text.split(marker, 1)[1].splitlines()[0].replace("] [", " ").strip("[]").replace("\\'", "'")
    for line in text.splitlines():
        if not line.strip() or line.startswith(
            (" ", "\t", "Graph execution error", "Detected at node", "<stack traces unavailable>")
        ):
            continue
        if line.startswith("{{function_node"):
            line = line.split("}}", 1)[-1]
        return line.split(" [Op:", 1)[0].strip()
    return type(error).__name__


def export(
    module: ExportModule,
    export_base: str,
    function_keys: Optional[Mapping[str, str]] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    assets: Optional[Mapping[str, bytes | str]] = None,
) -> str:
    """Writes `module` as a SavedModel into `<export_base>/<next integer version>/`.

    The SavedModel is saved into a temporary sibling (`<export_base>/.partial-*`,
    a name that TF Serving and `avalign.export_util` ignore: they read integer
    names only) and renamed to the version directory once complete, metadata
    included; a failure removes the temporary directory, and a kill leaves only
    it, so a version directory is always a whole export. An existing version is
    never written over: if another exporter takes the version first, this one
    takes the next.

    On a local or POSIX file system the rename is atomic. On object stores
    (`gs://`, `s3://`) `tf.io.gfile.rename` of a directory copies object by
    object, then deletes the originals: a reader polling the base (TF Serving)
    may see the version directory fill up, and a kill mid-copy leaves a partial
    version to delete by hand. Where a server watches the base, have it load
    only the versions its model config names (TF Serving's
    `model_version_policy { specific { ... } }`) and add a version once
    `export` has returned.

    Args:
      module: what to export.
      export_base: the model's directory of versions (local or `gs://`).
      function_keys: function key -> signature key; the module's
        `default_function_keys` when None.
      metadata: JSON-ready facts of what made the model (e.g. the task, the
        job's config digest), recorded in `assets.extra/avalign.json` beside
        what the export itself records (module, params, signatures with their
        input and output names, dtypes and shapes).
      assets: file name -> content of further files for `assets.extra/` (e.g.
        the job's config, `tf_serving_warmup_requests`), written before the
        version is published.

    Returns:
      The version directory written.

    Raises:
      ValueError: unknown function keys (see `get_inference_signatures`).
      TypeError: `metadata` is not JSON-serializable.
      FileExistsError: every version tried was taken by other exporters.
    """
    function_keys = dict(module.default_function_keys if function_keys is None else function_keys)
    # Both checked before anything is written.
    signatures = module.get_inference_signatures(function_keys)
    metadata = json.loads(json.dumps(dict(metadata or {})))
    assets = dict(assets or {})
    for name in assets:
        if name == METADATA_FILE or not name or os.path.basename(name) != name:
            raise ValueError(f"assets: {name!r} is not a plain file name for {METADATA_DIR}/ (nor {METADATA_FILE}).")
    tf.io.gfile.makedirs(export_base)
    partial = os.path.join(export_base, f"{fileio.PARTIAL_PREFIX}{uuid.uuid4().hex}")
    try:
        tf.saved_model.save(module, partial, signatures=signatures)
        record = _describe(module, function_keys, partial, metadata)
        tf.io.gfile.makedirs(os.path.join(partial, METADATA_DIR))
        with tf.io.gfile.GFile(os.path.join(partial, METADATA_DIR, METADATA_FILE), "w") as f:
            f.write(json.dumps(record, indent=1, sort_keys=True) + "\n")
        for name, content in sorted(assets.items()):
            with tf.io.gfile.GFile(os.path.join(partial, METADATA_DIR, name), "wb") as f:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
        path = _publish(partial, export_base)
    except BaseException:
        # Also on KeyboardInterrupt: nothing half-written stays behind when we can help it.
        if tf.io.gfile.exists(partial):
            tf.io.gfile.rmtree(partial)
        raise
    logging.info("Exported %s (signatures %s) to %s", module.name, sorted(signatures), path)
    return path


def read_metadata(export_dir: str) -> dict[str, Any]:
    """The metadata `export` recorded in a version directory."""
    with tf.io.gfile.GFile(os.path.join(export_dir, METADATA_DIR, METADATA_FILE)) as f:
        return json.load(f)


def _publish(partial: str, export_base: str) -> str:
    """Renames the complete export to the next free version; returns that version's directory."""
    tried = []
    for _ in range(_PUBLISH_ATTEMPTS):
        path = export_util.next_version_dir(export_base)
        try:
            tf.io.gfile.rename(partial, path, overwrite=False)
            return path
        except tf.errors.AlreadyExistsError:
            # Another exporter published this version after we listed the base.
            tried.append(path)
    raise FileExistsError(
        f"Versions {tried} were each taken by another export while this one was renaming {partial}; "
        f"are many exports writing to {export_base} at once?"
    )


def _tensor_info(info) -> dict[str, Any]:
    """dtype and shape (None for an unknown dimension) of a signature's TensorInfo, as TF Serving sees it."""
    shape = None if info.tensor_shape.unknown_rank else [d.size if d.size >= 0 else None for d in info.tensor_shape.dim]
    return {"dtype": tf.as_dtype(info.dtype).name, "shape": shape}


def _describe(module: ExportModule, function_keys: Mapping[str, str], saved_dir: str, metadata: dict) -> dict:
    """The metadata record of an export, with the signatures read back from the written saved_model.pb."""
    saved = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(saved_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    signature_defs = saved.meta_graphs[0].signature_def
    by_signature = {signature: function for function, signature in function_keys.items()}
    signatures = {
        key: {
            "function_key": function,
            "inputs": {name: _tensor_info(info) for name, info in sorted(signature_defs[key].inputs.items())},
            "outputs": {name: _tensor_info(info) for name, info in sorted(signature_defs[key].outputs.items())},
        }
        for key, function in sorted(by_signature.items())
    }
    return {
        "model": getattr(module.model, "name", None) or module.name,
        "module": f"{type(module).__module__}.{type(module).__qualname__}",
        "params": module.params,
        "signatures": signatures,
        "metadata": metadata,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
