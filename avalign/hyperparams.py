"""Typed, layered configs: dataclass defaults -> YAML file -> `--set a.b=c` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from typing import Any, Iterable, Mapping, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key or value is invalid; the message names it."""


def _nearest(key: str, valid: Iterable[str]) -> str:
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
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}.")
        inner = args[0] if args else Any
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
      ConfigError: on an unknown key (naming it and the nearest valid one)
        or a value of the wrong type.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}.")
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in types_:
            raise ConfigError(f"Unknown config key '{where}'." + _nearest(str(key), types_))
        kwargs[key] = _coerce(value, types_[key], where)
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
    """Splits `a.b=c` into (['a', 'b'], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"Override {text!r} must look like key.path=value.")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"Override {text!r} has an empty key.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


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
                raise ConfigError(f"Unknown config key '{dotted}' in --set {text!r}." + _nearest(part, types_))
            if i == len(path) - 1:
                node[part] = value
            else:
                sub = types_[part]
                if not dataclasses.is_dataclass(sub):
                    raise ConfigError(f"'{dotted}' is not a section; cannot set {text!r}.")
                node, node_cls = node[part], sub
    return from_dict(type(cfg), data)


def load(cls: type[T], path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> T:
    """Layers code defaults, an optional YAML file and overrides into `cls`.

    Raises:
      ConfigError: unknown key, bad value, or a YAML file that is not a mapping.
      FileNotFoundError: `path` does not exist.
    """
    data: Mapping[str, Any] = {}
    if path:
        with open(path, encoding="utf-8") as f:
            try:
                data = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}.")
        try:
            cfg = from_dict(cls, data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
    else:
        cfg = cls()
    return apply_overrides(cfg, overrides)


def save(cfg: Any, path: str | os.PathLike) -> None:
    """Writes the resolved config as YAML (the record of what made an artifact)."""
    import tensorflow as tf  # gfile: job dirs may be gs:// paths.

    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    parent = os.path.dirname(str(path))
    if parent:
        tf.io.gfile.makedirs(parent)
    with tf.io.gfile.GFile(str(path), "w") as f:
        f.write(text)
