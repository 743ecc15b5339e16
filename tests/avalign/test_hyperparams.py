"""Config layering (defaults -> YAML -> --set) and its errors."""

import dataclasses
from typing import Literal, Optional

import pytest
import yaml

from avalign import fileio, hyperparams


@dataclasses.dataclass
class Inner:
    """Test section.

    Attributes:
      width: a width.
      rate: a rate.
      names: names.
      scales: numbers in (0, 1].
      fraction: an optional number in [0, 1).
      floor: a number that may be -inf.
    """

    width: int = hyperparams.field(8, bounds="[1, inf)")
    rate: float = 0.5
    names: list[str] = dataclasses.field(default_factory=lambda: ["a"])
    scales: list[float] = hyperparams.field(default_factory=lambda: [1.0], bounds="(0, 1]")
    fraction: Optional[float] = hyperparams.field(None, bounds="[0, 1)")
    floor: float = hyperparams.field(0.0, allow_nonfinite=True)

    def __post_init__(self):
        hyperparams.validate(self)


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
        ("inner.width=abc", r"inner\.width must be an integer in \[1, inf\), got 'abc'"),
        ("mode=xyz", r"not one of \['av', 'v', 'a'\]"),
        ("flag=maybe", "expected true/false"),
        ("inner.width=-1", r"inner\.width must be an integer in \[1, inf\), got -1\."),
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


def test_save_is_atomic_a_write_cut_short_keeps_the_old_config(tmp_path, monkeypatch):
    path = tmp_path / "job" / "config.yaml"
    hyperparams.save(hyperparams.apply_overrides(Outer(), ["inner.width=3"]), path)
    before = path.read_text()

    def killed(partial, final):
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(fileio, "publish", killed)
    with pytest.raises(KeyboardInterrupt):
        hyperparams.save(hyperparams.apply_overrides(Outer(), ["inner.width=5"]), path)
    assert path.read_text() == before  # the new text only ever went to the temporary name
    assert (path.parent / (fileio.PARTIAL_PREFIX + "config.yaml")).exists()


@pytest.mark.parametrize(
    "text, value",
    [
        ("1e-3", 1e-3),
        ("1E-3", 1e-3),
        ("1.0e3", 1000.0),
        (".5", 0.5),
        ("+.5", 0.5),
        ("-1.5e+2", -150.0),
        ("2", 2.0),  # an integer for a float field
        ("1_000", 1000.0),  # underscores between digits, as Python's float() takes them
    ],
)
def test_floats_in_yaml_1_2_and_python_notation(tmp_path, text, value):
    f = tmp_path / "c.yaml"
    f.write_text(f"inner:\n  rate: {text}\n")
    for cfg in (hyperparams.load(Outer, f), hyperparams.apply_overrides(Outer(), [f"inner.rate={text}"])):
        assert cfg.inner.rate == value and isinstance(cfg.inner.rate, float)


def test_lists_of_floats_in_scientific_notation(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("inner:\n  scales: [1e-3, 5E-1, 1]\n")
    assert hyperparams.load(Outer, f).inner.scales == [1e-3, 0.5, 1.0]
    assert hyperparams.load(Outer, overrides=["inner.scales=1e-3,.5"]).inner.scales == [1e-3, 0.5]
    assert hyperparams.load(Outer, overrides=["inner.scales=[1e-3, 1]"]).inner.scales == [1e-3, 1.0]
    assert hyperparams.load(Outer, overrides=["inner.scales=2.5e-1"]).inner.scales == [0.25]


@pytest.mark.parametrize(
    "text, value",
    [("16", 16), ("1e3", 1000), ("2.0", 2), ("010", 10), ("1_024", 1024), ("0x10", 16), ("0o17", 15)],
)
def test_integers_take_integral_numbers_in_any_notation(text, value):
    cfg = hyperparams.load(Outer, overrides=[f"inner.width={text}"])
    assert cfg.inner.width == value and type(cfg.inner.width) is int


@pytest.mark.parametrize(
    "override, message",
    [
        ("inner.rate=.nan", r"inner\.rate must be a finite number, got nan"),
        ("inner.rate=.inf", r"inner\.rate must be a finite number, got inf"),
        ("inner.rate=-.Inf", r"inner\.rate must be a finite number, got -inf"),
        ("inner.scales=[0.5, .nan]", r"inner\.scales\[1\] must be a finite number in \(0, 1\], got nan"),
        ("inner.fraction=.NaN", r"inner\.fraction must be a finite number in \[0, 1\), got nan"),
        ("inner.fraction=1", r"inner\.fraction must be a finite number in \[0, 1\), got 1\.0"),
        ("inner.scales=0", r"inner\.scales\[0\] must be a finite number in \(0, 1\], got 0\.0"),
        ("inner.width=1.5", r"inner\.width must be an integer in \[1, inf\), got 1\.5"),
        ("inner.width=.inf", r"inner\.width must be an integer in \[1, inf\), got inf"),
        ("inner.width=0", r"inner\.width must be an integer in \[1, inf\), got 0"),
        ("inner.rate=abc", r"inner\.rate must be a finite number, got 'abc'"),
    ],
)
def test_non_finite_and_out_of_range_numbers_name_key_value_and_range(tmp_path, override, message):
    with pytest.raises(hyperparams.ConfigError, match=message):
        hyperparams.apply_overrides(Outer(), [override])
    key, value = override.split("=")
    section, name = key.split(".")
    f = tmp_path / "c.yaml"
    f.write_text(f"{section}:\n  {name}: {value}\n")
    with pytest.raises(hyperparams.ConfigError, match=message):
        hyperparams.load(Outer, f)


def test_bounds_hold_for_configs_built_in_code_too():
    with pytest.raises(ValueError, match=r"width must be an integer in \[1, inf\), got 0"):
        Inner(width=0)
    with pytest.raises(ValueError, match=r"width must be an integer in \[1, inf\), got 2\.0"):
        Inner(width=2.0)
    with pytest.raises(ValueError, match="rate must be a finite number, got nan"):
        Inner(rate=float("nan"))
    assert Inner(floor=float("-inf")).floor == float("-inf")  # declared allow_nonfinite
    assert hyperparams.apply_overrides(Outer(), ["inner.floor=-.inf"]).inner.floor == float("-inf")


def test_bounds_notation():
    assert str(hyperparams.Bounds.parse("(0, inf)")) == "(0, inf)"
    assert 0.0 not in hyperparams.Bounds.parse("(0, inf)") and 1e-300 in hyperparams.Bounds.parse("(0, inf)")
    assert 1.0 in hyperparams.Bounds.parse("[0, 1]") and 1.0 not in hyperparams.Bounds.parse("[0,1)")
    for bad in ("0, 1", "[1, 0]", "[a, 1]", "(0, nan)"):
        with pytest.raises(ValueError, match="must be an interval"):
            hyperparams.Bounds.parse(bad)


def test_strings_that_look_like_numbers_keep_their_text(tmp_path):
    cfg = hyperparams.apply_overrides(Outer(), ["path=1e3", "inner.names=010,1e3"])
    assert cfg.path == "1e3" and cfg.inner.names == ["010", "1e3"]
    hyperparams.save(cfg, tmp_path / "config.yaml")
    assert hyperparams.load(Outer, tmp_path / "config.yaml") == cfg


def test_experiment_and_preprocessing_configs_reject_nan_and_take_scientific_notation(tmp_path):
    from preprocessing.config import PreprocessConfig
    from trainer.config import load_experiment

    f = tmp_path / "experiment.yaml"
    f.write_text("task: retrieval\ntrain:\n  learning_rate: 1e-3\n  weight_decay: 1E-4\nmodel:\n  margin: 1e-3\n")
    cfg = load_experiment(f, ["train.clipnorm=1e0"])
    assert (cfg.train.learning_rate, cfg.train.weight_decay, cfg.model.margin) == (1e-3, 1e-4, 1e-3)
    assert cfg.train.clipnorm == 1.0
    for override, message in [
        ("train.learning_rate=.nan", r"train\.learning_rate must be a finite number in \(0, inf\), got nan"),
        ("train.learning_rate=-1e-3", r"train\.learning_rate must be a finite number in \(0, inf\), got -0\.001"),
        ("eval.nms_iou=.inf", r"eval\.nms_iou must be a finite number in \[0, 1\], got inf"),
        ("model.dropout=.nan", r"model\.dropout must be a finite number in \[0, 1\)"),
        ("train.epochs=2.5", r"train\.epochs must be an integer in \[1, inf\), got 2\.5"),
    ]:
        with pytest.raises(hyperparams.ConfigError, match=message):
            load_experiment(overrides=[override])
    for override, message in [
        ("decode_frame_rate=.nan", r"decode_frame_rate must be a finite number in \(0, inf\), got nan"),
        ("audio.preemphasis=.inf", r"audio\.preemphasis must be a finite number in \[0, 1\), got inf"),
        ("visual.stream_2d.rate=.nan", r"visual\.stream_2d\.rate must be a finite number, got nan"),
    ]:
        with pytest.raises(hyperparams.ConfigError, match=message):
            hyperparams.load(PreprocessConfig, overrides=[override])
    assert hyperparams.load(PreprocessConfig, overrides=["decode_frame_rate=2.5e0"]).decode_frame_rate == 2.5


def test_trainer_cli_rejects_a_nan_learning_rate_before_any_work(tmp_path, capsys):
    from trainer import task

    job_dir = tmp_path / "job"
    assert task.main(["--job-dir", str(job_dir), "--set", "train.learning_rate=.nan"]) == 2
    err = capsys.readouterr().err
    assert "train.learning_rate must be a finite number in (0, inf), got nan" in err
    assert not job_dir.exists()
    # 1e-3 is accepted: the run gets past the config and stops at the (absent) records.
    records = tmp_path / "no_records"
    argv = ["--job-dir", str(job_dir), "--set", "train.learning_rate=1e-3", "--set", f"data.records_dir={records}"]
    assert task.main(argv) == 2
    err = capsys.readouterr().err
    assert str(records) in err and "learning_rate" not in err


def test_digest_is_equal_for_equal_configs_and_differs_otherwise():
    from preprocessing.config import PreprocessConfig

    a, b = PreprocessConfig(), hyperparams.load(PreprocessConfig)
    assert hyperparams.digest(a) == hyperparams.digest(b) and len(hyperparams.digest(a)) == 64
    assert hyperparams.digest(hyperparams.apply_overrides(a, ["num_shards=7"])) != hyperparams.digest(a)
