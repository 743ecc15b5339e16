"""The search space of a config's `tune` section: checked against the config, declared to KerasTuner, applied to a trial.

A searched key is a dotted config key; its values are the config's own, so a
trial is exactly a training run of the config with those values set
(`trial_config`), and the best trial's config trains with `python -m trainer.task`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Mapping

import keras_tuner

from avalign import hyperparams
from trainer.config import ExperimentConfig, SearchParam

# The sections a trial may change: the records are prepared once for the whole
# search (data), every trial runs under the search's strategy (runtime), and
# trials export nothing (export).
SEARCHABLE_SECTIONS = ("model", "train", "eval")
# Values KerasTuner adds for its own bookkeeping (Hyperband's epochs and brackets).
TUNER_PREFIX = "tuner/"
HYPERBAND_EPOCHS = "tuner/epochs"


def _scalar_kind(tp: Any) -> Any:
    """bool, int, float, str, a Literal, or None (not searchable) for a field annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _scalar_kind(args[0]) if len(args) == 1 else None
    if origin is typing.Literal:
        return tp
    return tp if tp in (bool, int, float, str) else None


def field_kind(cfg: ExperimentConfig, key: str) -> Any:
    """The scalar type of config key `key` (bool, int, float, str or a Literal).

    Raises:
      hyperparams.ConfigError: the key does not exist (naming the nearest one),
        lies outside the searchable sections, or is not a scalar field.
    """
    where = f"tune.space key {key!r}"
    parts = key.split(".") if key else []
    if not parts or parts[0] not in SEARCHABLE_SECTIONS:
        raise hyperparams.ConfigError(
            f"{where}: only keys of the {', '.join(SEARCHABLE_SECTIONS)} sections can be searched (the records are "
            "prepared once for the whole search, and every trial runs under its runtime strategy)."
        )
    node: Any = cfg
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(node):
            raise hyperparams.ConfigError(f"{where}: {'.'.join(parts[:i])} is not a section.")
        hints = typing.get_type_hints(type(node))
        names = [f.name for f in dataclasses.fields(node)]
        if part not in names:
            prefix = ".".join(parts[:i])
            raise hyperparams.ConfigError(
                f"{where} is not a config key of task {cfg.task!r}."
                + hyperparams.nearest(".".join(parts[: i + 1]), [f"{prefix}.{n}" for n in names])
            )
        tp = hints[part]
        node = getattr(node, part)
    kind = _scalar_kind(tp)
    if kind is None or dataclasses.is_dataclass(node):
        raise hyperparams.ConfigError(
            f"{where}: only number, string and true/false fields can be searched; {key} holds {node!r}."
        )
    return kind


def with_values(cfg: ExperimentConfig, values: Mapping[str, Any]) -> ExperimentConfig:
    """A copy of `cfg` with dotted keys set to `values`, validated as a loaded config is.

    Raises:
      hyperparams.ConfigError: a value is not valid for its key (naming both).
    """
    data = hyperparams.to_dict(cfg)
    for key, value in values.items():
        node = data
        *sections, name = key.split(".")
        for part in sections:
            node = node[part]
        node[name] = value
    return hyperparams.from_dict(type(cfg), data)


def trial_config(cfg: ExperimentConfig, values: Mapping[str, Any]) -> ExperimentConfig:
    """The config a trial trains: `cfg` with the trial's values (Hyperband's epochs as `train.epochs`)."""
    settings = {k: v for k, v in values.items() if not k.startswith(TUNER_PREFIX)}
    if HYPERBAND_EPOCHS in values:
        settings["train.epochs"] = int(values[HYPERBAND_EPOCHS])
    return with_values(cfg, settings)


def _number(p: SearchParam, name: str, kind: Any) -> Any:
    value = getattr(p, name)
    if value is None:
        raise hyperparams.ConfigError(f"tune.space {p.key}: a {p.type} range needs {name}.")
    if kind is int:
        if not float(value).is_integer():
            raise hyperparams.ConfigError(f"tune.space {p.key}: {name}={value!r} must be an integer (an int field).")
        return int(value)
    return float(value)


def _check_value(cfg: ExperimentConfig, p: SearchParam, value: Any, what: str) -> None:
    try:
        with_values(cfg, {p.key: value})
    except hyperparams.ConfigError as e:
        raise hyperparams.ConfigError(f"tune.space {p.key}: {what} {value!r} is not a valid value: {e}") from None


def _choice_values(cfg: ExperimentConfig, p: SearchParam, kind: Any) -> list:
    if not p.values:
        raise hyperparams.ConfigError(f"tune.space {p.key}: a choice needs a non-empty list of values.")
    if p.min is not None or p.max is not None:
        raise hyperparams.ConfigError(f"tune.space {p.key}: a choice takes values, not min/max.")
    if typing.get_origin(kind) is typing.Literal:
        allowed = list(typing.get_args(kind))
        bad = [v for v in p.values if v not in allowed]
        if bad:
            raise hyperparams.ConfigError(f"tune.space {p.key}: {bad} not among the key's values {allowed}.")
        values = list(p.values)
    else:
        values = []
        for v in p.values:
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            ok = isinstance(v, bool) if kind is bool else isinstance(v, int) and number if kind is int else number
            ok = ok if kind is not str else isinstance(v, str)
            if not ok:
                raise hyperparams.ConfigError(
                    f"tune.space {p.key}: choice value {v!r} ({type(v).__name__}) is not of the key's type "
                    f"({kind.__name__}); every value must be."
                )
            values.append(float(v) if kind is float else v)
    if len(set(values)) != len(values):
        raise hyperparams.ConfigError(f"tune.space {p.key}: choice values {p.values} repeat a value.")
    for v in values:
        _check_value(cfg, p, v, "choice value")
    return values


def validate_space(cfg: ExperimentConfig) -> None:
    """Checks every searched key against the config, before any trial runs.

    Raises:
      hyperparams.ConfigError: an empty space, a repeated or unknown key, a key
        that can't be searched, an empty or inverted range, a log range that
        reaches 0 or below, a range type that is not the field's, or a value
        (range end or choice) the key does not accept; the message names it.
    """
    _declared(cfg)


def declare(cfg: ExperimentConfig) -> keras_tuner.HyperParameters:
    """The config's search space as KerasTuner hyperparameters named by their config keys (validated first)."""
    return _declared(cfg)


def _declared(cfg: ExperimentConfig) -> keras_tuner.HyperParameters:
    space = cfg.tune.space
    if not space:
        raise hyperparams.ConfigError(
            "tune.space is empty: list the config keys to search, e.g. "
            "`tune: {space: [{key: train.learning_rate, type: float, min: 1e-4, max: 1e-2, sampling: log}]}`."
        )
    keys = [p.key for p in space]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise hyperparams.ConfigError(f"tune.space lists {repeated} more than once.")
    hp = keras_tuner.HyperParameters()
    for p in space:
        kind = field_kind(cfg, p.key)
        if p.type == "choice":
            hp.Choice(p.key, _choice_values(cfg, p, kind), ordered=kind in (int, float))
            continue
        want = int if p.type == "int" else float
        if kind is not want:
            name = getattr(kind, "__name__", "a fixed set of values")
            raise hyperparams.ConfigError(
                f"tune.space {p.key}: type {p.type} does not fit the key, which holds {name}; "
                f"use {'type: int' if kind is int else 'type: choice' if kind is not float else 'type: float'}."
            )
        low, high = _number(p, "min", kind), _number(p, "max", kind)
        if p.values:
            raise hyperparams.ConfigError(f"tune.space {p.key}: a {p.type} range takes min/max, not values.")
        if not low < high:
            raise hyperparams.ConfigError(
                f"tune.space {p.key}: the range [{low}, {high}] is {'empty' if low == high else 'inverted'}; "
                "min must be below max (to fix a value, set the key itself instead)."
            )
        if p.sampling == "log" and low <= 0:
            raise hyperparams.ConfigError(
                f"tune.space {p.key}: a log range must lie above 0, got min={low}; use linear sampling or a min > 0."
            )
        for end, value in (("min", low), ("max", high)):
            _check_value(cfg, p, value, end)
        step = p.step or None
        if p.type == "int":
            if step is not None and not float(step).is_integer():
                raise hyperparams.ConfigError(f"tune.space {p.key}: step {p.step} of an int range must be an integer.")
            if p.sampling == "log" and step is not None and step < 2:
                raise hyperparams.ConfigError(f"tune.space {p.key}: a log step is a factor and must be >= 2.")
            hp.Int(p.key, low, high, step=int(step) if step else None, sampling=p.sampling)
        else:
            if p.sampling == "log" and step is not None and step <= 1:
                raise hyperparams.ConfigError(f"tune.space {p.key}: a log step is a factor and must be > 1.")
            if step is not None and p.sampling == "linear" and step > high - low:
                raise hyperparams.ConfigError(f"tune.space {p.key}: step {step} is wider than the range.")
            hp.Float(p.key, low, high, step=step, sampling=p.sampling)
    return hp


def finite(value: Any) -> bool:
    """Whether `value` is a finite number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
