"""TF Serving's REST JSON encoding: requests and responses both ways, and a stand-in for the server's predict."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

# The signature TF Serving runs when a request names none.
DEFAULT_SIGNATURE = "serving_default"
FORMS = ("columnar", "row")
# TF Serving writes a string output whose name ends so as {"b64": ...}; other strings as text.
BYTES_SUFFIX = "_bytes"

Value = Union[np.ndarray, list, bytes, str, int, float, bool]


class ServingJSONError(ValueError):
    """A request TF Serving would refuse with INVALID_ARGUMENT; the server's body is `{"error": str(err)}`."""

    def to_json(self) -> dict[str, str]:
        """The response body TF Serving sends with the error (HTTP 400)."""
        return {"error": str(self)}


# --- client side ------------------------------------------------------------------


def to_json_value(value: Any) -> Any:
    """A numpy array, list, scalar, bytes or str as TF Serving's JSON: nested lists, bytes as {"b64": ...}.

    Args:
      value: what to encode; bytes (also inside arrays and lists) become
        `{"b64": "<base64>"}`, str stays text, numpy scalars become Python ones.

    Returns:
      A JSON-ready value.

    Raises:
      TypeError: a value JSON can't hold (e.g. a complex number), naming its type.
    """
    if isinstance(value, np.ndarray):
        return to_json_value(value.tolist())
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, np.generic):
        return to_json_value(value.item())
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    raise TypeError(
        f"Can't encode a {type(value).__name__} as TF Serving JSON; give numbers, bools, str, bytes or arrays of them."
    )


def encode_request(
    inputs: Mapping[str, Value], signature_name: Optional[str] = None, form: str = "columnar"
) -> dict[str, Any]:
    """The JSON body of a `:predict` request.

    Args:
      inputs: input name -> value (numpy array, nested list, scalar, bytes or
        str); bytes, also inside arrays, are sent as `{"b64": ...}`.
      signature_name: the signature to run; TF Serving's `serving_default`
        when None.
      form: "columnar" (`{"inputs": {name: value}}`, any shapes) or "row"
        (`{"instances": [{name: value[i]}, ...]}`, every input batched along
        its first dimension, all with the same batch size).

    Returns:
      The request body, ready for `json.dumps`.

    Raises:
      ValueError: an unknown form, no inputs, or (row form) an input without a
        batch dimension or inputs with different batch sizes, naming them.
    """
    if form not in FORMS:
        raise ValueError(f"Unknown request form {form!r}; valid forms: {list(FORMS)}.")
    if not inputs:
        raise ValueError("No inputs to send; give at least one input name -> value.")
    body: dict[str, Any] = {} if signature_name is None else {"signature_name": signature_name}
    if form == "columnar":
        body["inputs"] = {name: to_json_value(_as_array(value)) for name, value in inputs.items()}
        return body
    arrays = {name: _as_array(value) for name, value in inputs.items()}
    scalars = sorted(name for name, a in arrays.items() if a.ndim == 0)
    if scalars:
        raise ValueError(
            f"Input(s) {scalars} have no batch dimension; the row form sends every input as a list of instances. "
            f"Use form='columnar' for unbatched inputs."
        )
    sizes = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"In the row form all inputs must have the same 0-th dimension; got batch sizes {sizes}. "
            f"Use form='columnar' for inputs of different batch sizes."
        )
    batch = next(iter(sizes.values()))
    body["instances"] = [{name: to_json_value(a[i]) for name, a in arrays.items()} for i in range(batch)]
    return body


def decode_response(body: Mapping[str, Any], form: str = "columnar", output_name: Optional[str] = None) -> dict:
    """The outputs of a `:predict` response body, as numpy arrays.

    TF Serving leaves out the output's name when a signature has a single
    output; such an output is returned under `output_name`, or under the
    response's key ("outputs" or "predictions") when that is None. JSON
    carries no dtype: numbers come back as numpy's default for them (int64,
    float64), strings and b64 values as bytes (object arrays).

    Args:
      body: the parsed JSON response.
      form: the form the request was sent in ("columnar" or "row").
      output_name: the name of a single unnamed output.

    Returns:
      Dict output name -> numpy array (row responses stacked along a new
      first dimension).

    Raises:
      ServingJSONError: the body is an `{"error": ...}` (its message verbatim).
      ValueError: an unknown form, or a body without the form's key.
    """
    if form not in FORMS:
        raise ValueError(f"Unknown response form {form!r}; valid forms: {list(FORMS)}.")
    if isinstance(body, Mapping) and "error" in body:
        raise ServingJSONError(body["error"])
    key = "outputs" if form == "columnar" else "predictions"
    if not isinstance(body, Mapping) or key not in body:
        found = sorted(body) if isinstance(body, Mapping) else type(body).__name__
        raise ValueError(f"A {form} response holds {key!r}; got {found}.")
    unnamed = output_name or key
    payload = body[key]
    if form == "columnar":
        if _is_named(payload):
            return {name: from_json_value(value) for name, value in payload.items()}
        return {unnamed: from_json_value(payload)}
    if not isinstance(payload, list):
        raise ValueError(f"'predictions' holds a list, one entry per instance; got {type(payload).__name__}.")
    if payload and all(_is_named(p) for p in payload):
        return {name: from_json_value([p[name] for p in payload]) for name in payload[0]}
    return {unnamed: from_json_value(payload)}


def _as_array(value: Value) -> np.ndarray:
    """A value as a numpy array; bytes and str stay whole (one element), not split into characters."""
    if isinstance(value, (bytes, str)):
        return np.array(value, dtype=object)
    return np.asarray(value)


def _is_b64(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {"b64"} and isinstance(value["b64"], str)


def _is_named(value: Any) -> bool:
    """Whether a JSON object holds named tensors rather than being one binary value."""
    return isinstance(value, Mapping) and not _is_b64(value)


def from_json_value(value: Any) -> np.ndarray:
    """TF Serving's JSON for one tensor as a numpy array: nested lists, text and `{"b64": ...}` as bytes.

    Args:
      value: a JSON number, bool, text, b64 object, or nested lists of one kind.

    Returns:
      The array; strings as an object array of bytes, as `tf.Tensor.numpy()` gives them.
    """
    if _contains_text(value):
        decoded = _map_leaves(value, lambda v: base64.b64decode(v["b64"]) if _is_b64(v) else v.encode("utf-8"))
        out = np.empty(_shape_of(decoded), dtype=object)
        out[...] = _nested_to_objects(decoded, out.shape)
        return out
    return np.asarray(value)


def _contains_text(value: Any) -> bool:
    while isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, str) or _is_b64(value)


def _map_leaves(value: Any, fn) -> Any:
    if isinstance(value, list):
        return [_map_leaves(v, fn) for v in value]
    return fn(value)


def _shape_of(value: Any) -> tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _nested_to_objects(value: Any, shape: tuple[int, ...]) -> np.ndarray:
    # np.array on lists of bytes would make a fixed-width 'S' array and strip trailing NULs; fill an object array.
    out = np.empty(shape, dtype=object)
    for index in np.ndindex(*shape):
        leaf = value
        for i in index:
            leaf = leaf[i]
        out[index] = leaf
    return out


# --- server side: TF Serving's rules, to stand in for the server -----------------------


def predict_json(loaded: Any, request_body: Mapping[str, Any]) -> dict[str, Any]:
    """Answers a `:predict` request body as TF Serving would, with a SavedModel loaded in this process.

    Applies TF Serving's JSON -> tensor rules against the signature's input
    `TensorSpec`s (dtypes from the signature; text or `{"b64": ...}` for
    strings), runs the signature, and shapes the response as the server does:
    `{"predictions": [...]}` for a row request (one value per instance, or one
    dict per instance when there are several outputs), `{"outputs": ...}` for a
    columnar one (a dict when there are several outputs).

    Args:
      loaded: `tf.saved_model.load(version_dir)`.
      request_body: the parsed JSON request.

    Returns:
      The response body, ready for `json.dumps`.

    Raises:
      ServingJSONError: what TF Serving answers with INVALID_ARGUMENT: an
        unknown signature, neither or both of "instances" and "inputs", an
        unknown or missing input, a value of the wrong type, a ragged list, a
        shape the signature doesn't accept, or row instances that don't agree;
        the message names the input.
    """
    if not isinstance(request_body, Mapping):
        raise ServingJSONError(f"Malformed request: expected a JSON object; got {type(request_body).__name__}.")
    unknown_keys = sorted(set(request_body) - {"signature_name", "instances", "inputs"})
    if unknown_keys:
        raise ServingJSONError(
            f"Malformed request: unknown key(s) {unknown_keys}; valid keys: 'signature_name', 'instances', 'inputs'."
        )
    signature_name = request_body.get("signature_name", DEFAULT_SIGNATURE)
    if signature_name not in loaded.signatures:
        raise ServingJSONError(
            f"Serving signature name: {signature_name!r} not found in signature def; "
            f"valid signatures: {sorted(loaded.signatures)}."
        )
    # Imported here: the client side of this module (and so `serving.client`) runs without TensorFlow.
    import tensorflow as tf

    signature = loaded.signatures[signature_name]
    specs: dict[str, tf.TensorSpec] = dict(signature.structured_input_signature[1])
    has_rows, has_columns = "instances" in request_body, "inputs" in request_body
    if has_rows == has_columns:
        raise ServingJSONError(
            "Malformed request: give exactly one of 'instances' (row form) and 'inputs' (columnar form); "
            f"got {'both' if has_rows else 'neither'}."
        )
    if has_rows:
        raw = _rows_to_columns(request_body["instances"], specs)
    else:
        raw = _named_inputs(request_body["inputs"], specs, "'inputs'")
    tensors = {
        name: tf.constant(_to_array(name, value, specs[name], batched=has_rows), dtype=specs[name].dtype)
        for name, value in raw.items()
    }
    outputs = {name: t.numpy() for name, t in signature(**tensors).items()}
    if has_columns:
        if len(outputs) == 1:
            ((name, value),) = outputs.items()
            return {"outputs": _output_json(name, value)}
        return {"outputs": {name: _output_json(name, value) for name, value in sorted(outputs.items())}}
    batch = len(request_body["instances"])
    for name, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != batch:
            raise ServingJSONError(
                f"Tensor name: {name} has inconsistent batch size: {value.shape[0] if value.ndim else 'none'} "
                f"expecting: {batch}; the row form needs every output batched like the instances, use 'inputs'."
            )
    if len(outputs) == 1:
        ((name, value),) = outputs.items()
        return {"predictions": _output_json(name, value)}
    rows = {name: _output_json(name, value) for name, value in sorted(outputs.items())}
    return {"predictions": [{name: rows[name][i] for name in rows} for i in range(batch)]}


def _named_inputs(value: Any, specs: Mapping[str, tf.TensorSpec], where: str) -> dict[str, Any]:
    """Named input values of an object, or the one input of a bare value; checks the names."""
    if not _is_named(value):
        if len(specs) != 1:
            raise ServingJSONError(
                f"{where} holds a bare value, but the signature has inputs {sorted(specs)}; "
                f"give an object of named inputs."
            )
        return {next(iter(specs)): value}
    unknown = sorted(set(value) - set(specs))
    if unknown:
        raise ServingJSONError(f"{where}: unknown input(s) {unknown}; the signature's inputs are {sorted(specs)}.")
    missing = sorted(set(specs) - set(value))
    if missing:
        raise ServingJSONError(f"{where}: missing input(s) {missing}; the signature's inputs are {sorted(specs)}.")
    return dict(value)


def _rows_to_columns(instances: Any, specs: Mapping[str, tf.TensorSpec]) -> dict[str, list]:
    """The row form's instances as one list per input; every instance must give every input."""
    if not isinstance(instances, list) or not instances:
        raise ServingJSONError("'instances' must be a non-empty list, one entry per instance.")
    columns: dict[str, list] = {name: [] for name in specs}
    for i, instance in enumerate(instances):
        for name, value in _named_inputs(instance, specs, f"instances[{i}]").items():
            columns[name].append(value)
    return columns


def _to_array(name: str, value: Any, spec: tf.TensorSpec, batched: bool) -> np.ndarray:
    """One input's JSON value as an array of the signature's dtype and a shape it accepts."""
    dtype = spec.dtype
    shape = _json_shape(name, value, batched)
    if dtype.name == "string":
        leaves = _map_leaves(value, lambda v: _string_leaf(name, v))
        array = np.empty(shape, dtype=object)
        if shape:
            array[...] = _nested_to_objects(leaves, shape)
        else:
            array[()] = leaves
    else:
        _map_leaves(value, lambda v: _number_leaf(name, v, dtype))
        try:
            array = np.array(value, dtype=dtype.as_numpy_dtype).reshape(shape)
        except OverflowError:
            raise ServingJSONError(f"Input {name!r}: a value is out of range for {dtype.name}.") from None
    if not spec.shape.is_compatible_with(array.shape):
        raise ServingJSONError(
            f"Input {name!r}: shape {list(array.shape)} does not match the signature's "
            f"{spec.shape.as_list() if spec.shape.rank is not None else 'any'} (None: any size)."
        )
    return array


def _json_shape(name: str, value: Any, batched: bool) -> tuple[int, ...]:
    """The shape of nested lists, refusing ragged ones; `batched`: the first level is the row form's instances."""
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    shapes = [_json_shape(name, v, False) for v in value]
    for i, s in enumerate(shapes):
        if s != shapes[0]:
            where = f"instances[{i}]" if batched else f"element {i}"
            raise ServingJSONError(
                f"Input {name!r}: {where} has shape {list(s)} but the first has {list(shapes[0])}; "
                f"{'every instance must give an input the same shape' if batched else 'lists must not be ragged'}."
            )
    return (len(value),) + shapes[0]


def _string_leaf(name: str, leaf: Any) -> bytes:
    if _is_b64(leaf):
        try:
            return base64.b64decode(leaf["b64"], validate=True)
        except ValueError as err:
            raise ServingJSONError(f"Input {name!r}: {leaf['b64'][:40]!r} is not valid base64 ({err}).") from None
    if isinstance(leaf, str):
        return leaf.encode("utf-8")
    raise ServingJSONError(f'Input {name!r} is a string tensor; expected text or {{"b64": ...}}, got {leaf!r}.')


def _number_leaf(name: str, leaf: Any, dtype: tf.DType) -> None:
    """Checks one JSON number against the input's dtype, as TF Serving does."""
    if dtype.is_bool:
        if not isinstance(leaf, bool):
            raise ServingJSONError(f"Input {name!r} is {dtype.name}; expected true or false, got {leaf!r}.")
        return
    if isinstance(leaf, bool) or not isinstance(leaf, (int, float)):
        raise ServingJSONError(f"Input {name!r} is {dtype.name}; expected a number, got {leaf!r}.")
    if dtype.is_integer and not isinstance(leaf, int):
        raise ServingJSONError(f"Input {name!r} is {dtype.name}; expected an integer, got {leaf!r}.")


def _output_json(name: str, value: np.ndarray) -> Any:
    """One output tensor as TF Serving writes it: nested lists, strings as text or b64 when the name ends _bytes."""
    if value.dtype != object:
        return value.tolist()
    as_b64 = name.endswith(BYTES_SUFFIX)

    def leaf(b: bytes) -> Any:
        if not as_b64:
            try:
                return b.decode("utf-8")
            except UnicodeDecodeError:
                # TF Serving would write these bytes raw, which is not valid JSON; b64 is what a client can read.
                pass
        return to_json_value(b)

    return _map_leaves(value.tolist(), leaf)
