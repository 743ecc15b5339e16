"""Config layering (defaults -> YAML -> --set) and its errors."""

import dataclasses
from typing import Literal, Optional

import pytest
import yaml

from avalign import hyperparams


@dataclasses.dataclass
class Inner:
    """Test section.

    Attributes:
      width: a width.
      rate: a rate.
      names: names.
    """

    width: int = 8
    rate: float = 0.5
    names: list[str] = dataclasses.field(default_factory=lambda: ["a"])

    def __post_init__(self):
        if self.width <= 0:
            raise ValueError(f"width must be > 0, got {self.width}.")


@dataclasses.dataclass
class Outer:
    """Test root.

    Attributes:
      inner: nested section.
      mode: a choice.
      path: optional path.
      flag: a flag.
    """

    inner: Inner = dataclasses.field(default_factory=Inner)
    mode: Literal["av", "v", "a"] = "av"
    path: Optional[str] = None
    flag: bool = False


def test_layering_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"inner": {"width": 16}, "mode": "v"}))
    cfg = hyperparams.load(Outer, f, ["inner.rate=2", "flag=true", "inner.names=x,y", "path=2024"])
    assert cfg.inner.width == 16  # from YAML
    assert cfg.inner.rate == 2.0 and isinstance(cfg.inner.rate, float)  # int coerced to float
    assert cfg.mode == "v"
    assert cfg.flag is True
    assert cfg.inner.names == ["x", "y"]
    assert cfg.path == "2024"  # a number given to a string field keeps its text
    assert Outer().inner.width == 8  # defaults untouched


def test_unknown_key_in_yaml_names_key_and_nearest(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"inner": {"widht": 16}}))
    with pytest.raises(hyperparams.ConfigError, match=r"inner\.widht.*Did you mean 'width'"):
        hyperparams.load(Outer, f)


def test_unknown_override_names_key():
    with pytest.raises(hyperparams.ConfigError, match=r"inner\.rat'.*Did you mean 'rate'"):
        hyperparams.apply_overrides(Outer(), ["inner.rat=3"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("inner.width=abc", "expected an integer"),
        ("mode=xyz", r"not one of \['av', 'v', 'a'\]"),
        ("flag=maybe", "expected true/false"),
        ("inner.width=-1", "width must be > 0"),
        ("inner=3", "expected a mapping"),
        ("mode.sub=1", "not a section"),
        ("nokey", "key.path=value"),
    ],
)
def test_bad_values_are_rejected(override, message):
    with pytest.raises(hyperparams.ConfigError, match=message):
        hyperparams.apply_overrides(Outer(), [override])


def test_yaml_top_level_must_be_mapping(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(hyperparams.ConfigError, match="top level must be a mapping"):
        hyperparams.load(Outer, f)


def test_save_round_trip(tmp_path):
    cfg = hyperparams.apply_overrides(Outer(), ["inner.width=3", "mode=a"])
    hyperparams.save(cfg, tmp_path / "job" / "config.yaml")
    again = hyperparams.load(Outer, tmp_path / "job" / "config.yaml")
    assert again == cfg
