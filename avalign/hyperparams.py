"""Typed, layered configs: dataclass defaults -> YAML file -> `--set a.b=c` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import types
import typing
from typing import Any, Iterable, Mapping, TypeVar

import yaml

from avalign import fileio

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key or value is invalid; the message names it."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as YAML 1.2 (and Python) do.

    PyYAML resolves plain scalars by YAML 1.1, whose floats need a dot and a
    signed exponent (`1e-3`, `1E3`, `1.0e3` and `+.5` load as strings), whose
    integers with a leading zero are octal (`010` is 8) and whose `1:30` is
    sexagesimal (90). This loader reads the first as floats, `010` as 10,
    `0o17` as octal and `1:30` as a string. Underscores between digits
    (`1_000`) stay valid, as in Python's `int()` and `float()`.
    """


_INT_TAG = "tag:yaml.org,2002:int"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _INT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# Only scalars with a dot or an exponent (YAML 1.1's floats stay floats): integers stay integers.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9][0-9_]*|[0-9][0-9_]*\.[0-9_]*|[0-9][0-9_]*(?=[eE]))(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)
_Loader.add_implicit_resolver(
    _INT_TAG,
    re.compile(r"^[-+]?(?:[0-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+|0b[01_]+)$"),
    list("-+0123456789"),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = loader.construct_scalar(node).replace("_", "")
    prefixed = text.lstrip("+-")[:2].lower() in ("0o", "0x", "0b")
    return int(text, 0 if prefixed else 10)


_Loader.add_constructor(_INT_TAG, _construct_int)


class _Dumper(yaml.SafeDumper):
    """Quotes every string that `_Loader` would read back as something else (e.g. '1e3')."""


_Dumper.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


def load_yaml(stream: Any) -> Any:
    """Parses YAML text or a stream as configs are read (numbers as YAML 1.2 and Python read them)."""
    return yaml.load(stream, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


_BOUNDS = re.compile(r"^([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])$")


@dataclasses.dataclass(frozen=True)
class Bounds:
    """An interval of valid values, written as in mathematics: "(0, inf)", "[0, 1)".

    Attributes:
      low: lower end (-inf: none).
      high: upper end (inf: none).
      low_closed: `low` itself is valid.
      high_closed: `high` itself is valid.
    """

    low: float
    high: float
    low_closed: bool
    high_closed: bool

    @classmethod
    def parse(cls, text: str) -> "Bounds":
        """Reads interval notation, e.g. "[1, inf)".

        Raises:
          ValueError: `text` is not an interval.
        """
        match = _BOUNDS.match(text.strip())
        try:
            low, high = float(match.group(2)), float(match.group(3))
        except (AttributeError, ValueError):
            raise ValueError(f"bounds {text!r} must be an interval such as '(0, inf)' or '[0, 1]'.") from None
        if math.isnan(low) or math.isnan(high) or low > high:
            raise ValueError(f"bounds {text!r} must be an interval with low <= high.")
        return cls(low, high, match.group(1) == "[", match.group(4) == "]")

    def __contains__(self, value: float) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def __str__(self) -> str:
        def end(x: float) -> str:
            return "inf" if x == math.inf else "-inf" if x == -math.inf else f"{x:g}"

        return f"{'[' if self.low_closed else '('}{end(self.low)}, {end(self.high)}{']' if self.high_closed else ')'}"


def field(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    bounds: str | None = None,
    why: str = "",
    allow_nonfinite: bool = False,
) -> Any:
    """A dataclass field with the valid range of a number (or of each number of a list).

    Every config built by this module, and every config class whose
    `__post_init__` calls `validate`, is checked against it: the value must have
    the field's type (an integer for `int`), be finite (for `float`, unless
    `allow_nonfinite`) and lie in `bounds`. Checks that relate two fields stay in
    the class's `__post_init__`.

    Args:
      default: the default value.
      default_factory: or a factory of it (lists, dicts).
      bounds: interval notation, e.g. "(0, inf)", "[0, 1)", "[1, inf)".
      why: a reason shown with a value out of bounds.
      allow_nonfinite: let a float field hold NaN or +-inf.

    Returns:
      A `dataclasses.Field`.

    Raises:
      ValueError: `bounds` is not an interval.
    """
    metadata = {"allow_nonfinite": allow_nonfinite, "why": why}
    if bounds is not None:
        metadata["bounds"] = Bounds.parse(bounds)
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def _numeric_kind(tp: Any) -> tuple[type | None, bool]:
    """(int or float or None, whether the field is a list/tuple of them) of an annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _numeric_kind(args[0]) if len(args) == 1 else (None, False)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        kind, nested = _numeric_kind(args[0]) if args else (None, False)
        return (kind, True) if not nested else (None, False)
    if tp in (int, float) and tp is not bool:
        return tp, False
    return None, False


def _check_number(value: Any, kind: type, metadata: Mapping[str, Any], where: str) -> None:
    bounds = metadata.get("bounds")
    finite = kind is float and not metadata.get("allow_nonfinite", False)
    valid = ("an integer" if kind is int else "a finite number" if finite else "a number") + (
        f" in {bounds}" if bounds is not None else ""
    )
    why = f" ({metadata['why']})" if metadata.get("why") else ""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or (kind is int and not isinstance(value, int)):
        raise ConfigError(f"{where} must be {valid}, got {value!r}.")
    if finite and not math.isfinite(value):
        raise ConfigError(f"{where} must be {valid}, got {value!r}: NaN and infinities are not valid here.")
    if bounds is not None and value not in bounds:
        raise ConfigError(f"{where} must be {valid}{why}, got {value!r}.")


def _check_field(f: dataclasses.Field, tp: Any, value: Any, where: str) -> None:
    kind, is_list = _numeric_kind(tp)
    if kind is None or value is None:
        return
    if not is_list:
        _check_number(value, kind, f.metadata, where)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_number(item, kind, f.metadata, f"{where}[{i}]")


def validate(cfg: Any) -> None:
    """Checks the numbers of one config section: type, finiteness and `field` bounds.

    Config classes call it first thing in `__post_init__`, so that a config built
    in code is held to the same rules as one loaded from YAML and `--set`. Float
    fields reject NaN and infinities unless declared with `allow_nonfinite`.
    Nested sections are checked by their own `__post_init__`.

    Raises:
      ConfigError: naming the field, its value and the valid range.
    """
    types_ = _field_types(type(cfg))
    for f in dataclasses.fields(cfg):
        _check_field(f, types_[f.name], getattr(cfg, f.name), f.name)


def nearest(key: str, valid: Iterable[str]) -> str:
    """The hint an error about `key` ends with: the closest of `valid`, if any is close, then all of them."""
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"{hint} Valid keys: {', '.join(sorted(valid))}."


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Checks `value` against the annotation `tp`, converting where lossless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}.")
        return value
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}.")
        return from_dict(tp, value, prefix=where)
    if origin in (list, tuple):
        inner = args[0] if args else Any
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
            if _numeric_kind(inner)[0] is not None:  # `--set widths=8,8,16,16`
                value = [load_yaml(v) for v in value]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # `--set scales=0.5`, as `--set names=a` is ['a']
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}.")
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}.")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}.")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}.")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}.")
        return float(value)
    if tp is str:
        # `--set key=1` and YAML `key: 2024` parse as numbers; a string field takes their text.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}.")
        return value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Builds dataclass `cls` from a nested mapping, rejecting unknown keys.

    Args:
      cls: a dataclass type whose fields may be nested dataclasses.
      data: the mapping (e.g. parsed YAML).
      prefix: dotted path of `data` inside the root config, for messages.

    Returns:
      An instance of `cls`; fields absent from `data` keep their defaults.

    Raises:
      ConfigError: on an unknown key (naming it and the nearest valid one),
        a value of the wrong type, a NaN or infinite float, or a number out of
        its field's bounds (naming the dotted key, the value and the range).
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}.")
    types_ = _field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in types_:
            raise ConfigError(f"Unknown config key '{where}'." + nearest(str(key), types_))
        try:
            kwargs[key] = _coerce(value, types_[key], where)
        except ConfigError:
            _check_field(fields[key], types_[key], value, where)  # a number's message names its range
            raise
        _check_field(fields[key], types_[key], kwargs[key], where)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{prefix or cls.__name__}: {e}") from e


def to_dict(cfg: Any) -> dict[str, Any]:
    """Returns the config as plain nested dicts and lists (YAML/JSON-ready)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Splits `a.b=c` into (['a', 'b'], value parsed as YAML 1.2: `1e-3` is a float)."""
    if "=" not in text:
        raise ConfigError(f"Override {text!r} must look like key.path=value.")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"Override {text!r} has an empty key.")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _takes_text(tp: Any) -> bool:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return str in typing.get_args(tp)
    return tp is str


def apply_overrides(cfg: T, overrides: Iterable[str]) -> T:
    """Returns a copy of `cfg` with `a.b=c` overrides applied and re-validated."""
    data = to_dict(cfg)
    for text in overrides:
        path, value = parse_override(text)
        node, node_cls = data, type(cfg)
        for i, part in enumerate(path):
            types_ = _field_types(node_cls)
            dotted = ".".join(path[: i + 1])
            if part not in types_:
                raise ConfigError(f"Unknown config key '{dotted}' in --set {text!r}." + nearest(part, types_))
            if i == len(path) - 1:
                if _takes_text(types_[part]) and isinstance(value, (int, float)) and not isinstance(value, bool):
                    value = text.split("=", 1)[1].strip()  # `--set name=1e3` keeps its text, not '1000.0'
                node[part] = value
            else:
                sub = types_[part]
                if not dataclasses.is_dataclass(sub):
                    raise ConfigError(f"'{dotted}' is not a section; cannot set {text!r}.")
                node, node_cls = node[part], sub
    return from_dict(type(cfg), data)


def read_mapping(path: str | os.PathLike) -> Mapping[str, Any]:
    """A YAML config file's top-level mapping (empty for an empty file), read as `load_yaml` reads.

    Local paths are opened directly (no TensorFlow import); `gs://` and other
    remote paths through `tf.io.gfile`.

    Raises:
      ConfigError: the file is not valid YAML or its top level is not a mapping.
      FileNotFoundError: `path` does not exist.
    """
    if "://" in str(path):
        import tensorflow as tf

        if not tf.io.gfile.exists(str(path)):
            raise FileNotFoundError(f"{path}: no such config file.")
        opened = tf.io.gfile.GFile(str(path))
    else:
        opened = open(path, encoding="utf-8")
    with opened as f:
        try:
            data = load_yaml(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}.")
    return data


def load(cls: type[T], path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> T:
    """Layers code defaults, an optional YAML file and overrides into `cls`.

    Raises:
      ConfigError: unknown key, bad value, or a YAML file that is not a mapping.
      FileNotFoundError: `path` does not exist.
    """
    if path:
        data = read_mapping(path)
        try:
            cfg = from_dict(cls, data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
    else:
        cfg = cls()
    return apply_overrides(cfg, overrides)


def digest(cfg: Any) -> str:
    """sha256 of a config's canonical JSON (sorted keys, no spaces): equal configs give equal digests.

    Artifacts record it beside the config that made them, so two can be told apart
    or matched without comparing whole configs.
    """
    text = json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML text, as `save` writes it."""
    return yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False)


def save(cfg: Any, path: str | os.PathLike) -> None:
    """Writes the resolved config as YAML (the record of what made an artifact), atomically."""
    fileio.write_text(str(path), to_yaml(cfg))
