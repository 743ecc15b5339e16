"""Tasks own their configs: the task's name picks its registered config class, and a new task is new files only."""

import logging
import textwrap

import pytest

import trainer
from avalign import hyperparams
from tests.jobs import MALTA, TINY_MALTA, experiment_config
from trainer import registry, train_lib
from trainer.config import ExperimentConfig, load_experiment
from trainer.localization.config import LocalizationConfig
from trainer.retrieval.config import RetrievalConfig


def test_the_task_name_picks_the_config_class_and_its_keys():
    assert type(load_experiment()) is LocalizationConfig
    cfg = load_experiment(overrides=["task=retrieval", "model.embedding_dim=64", "data.clip_source=windows"])
    assert type(cfg) is RetrievalConfig and cfg.model.embedding_dim == 64 and cfg.data.clip_source == "windows"
    # A task-only key of one task is unknown to the other, with the nearest valid key named.
    with pytest.raises(hyperparams.ConfigError, match=r"Unknown config key 'data\.caption_field'"):
        load_experiment(overrides=["task=retrieval", "data.caption_field=text_en"])
    with pytest.raises(hyperparams.ConfigError, match=r"Unknown config key 'eval\.retrieval_block_size'"):
        load_experiment(overrides=["eval.retrieval_block_size=8"])
    with pytest.raises(hyperparams.ConfigError, match=r"Unknown task 'captioning'; known tasks: \['localization', "):
        load_experiment(overrides=["task=captioning"])
    assert {"localization", "retrieval"} <= set(registry.task_names())


def test_a_config_in_the_old_layout_is_read_with_a_warning(tmp_path, caplog):
    old = tmp_path / "old.yaml"
    old.write_text("task: retrieval\nmodel:\n  retrieval:\n    embedding_dim: 32\n")
    with caplog.at_level(logging.WARNING):
        cfg = load_experiment(str(old))
    assert cfg.model.embedding_dim == 32
    assert "model.retrieval.<key> is the old layout" in caplog.text


def test_a_third_task_is_added_by_files_alone(tmp_path, monkeypatch):
    package = tmp_path / "toy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "config.py").write_text(
        textwrap.dedent(
            """
            import dataclasses

            from trainer import config as config_lib
            from trainer import registry


            @dataclasses.dataclass
            class ToyModelConfig:
                width: int = 3


            @registry.register_config("toy")
            @dataclasses.dataclass
            class ToyConfig(config_lib.ExperimentConfig):
                task: str = "toy"
                model: ToyModelConfig = dataclasses.field(default_factory=ToyModelConfig)
            """
        )
    )
    (package / "task.py").write_text(
        textwrap.dedent(
            """
            from trainer.base_task import Task
            from trainer.registry import register_task
            from trainer.toy.config import ToyConfig


            @register_task(ToyConfig)
            class ToyTask(Task):
                prepare = configure = build_model = compile = dataset = num_examples = None
                monitor = evaluate = format_results = None
            """
        )
    )
    monkeypatch.setattr(trainer, "__path__", [*trainer.__path__, str(tmp_path)])
    cfg = load_experiment(overrides=["task=toy", "model.width=5"])
    assert type(cfg).__name__ == "ToyConfig" and cfg.model.width == 5
    assert isinstance(cfg, ExperimentConfig)
    assert registry.get_task(cfg).__name__ == "ToyTask" and registry.get_task(cfg).name == "toy"
    assert "toy" in registry.task_names()


def test_a_new_model_config_takes_effect_on_a_task_prepared_once(tiny_records, tmp_path):
    cfg = experiment_config(MALTA, tiny_records, TINY_MALTA)
    task = train_lib.prepare_task(cfg, str(tmp_path / "job"), train=True)
    assert task.configure().video_hidden == 16
    trial = hyperparams.apply_overrides(cfg, ["model.video_hidden=24", "model.num_segments=8"])
    resolved = task.configure(trial)
    assert (resolved.video_hidden, resolved.num_segments) == (24, 8)
    assert resolved.video_dim == task.dims["video_dim"] > 0  # filled in from the records
    model = task.build_model()
    assert model.input["video"].shape[1:] == (8, task.dims["video_dim"])
    x, _ = next(iter(task.dataset(cfg.data.train_split, False, 2)))
    assert x["video"].shape[1] == 8  # the input pipeline follows the new config too
    with pytest.raises(hyperparams.ConfigError, match="not the task or data section"):
        task.configure(hyperparams.apply_overrides(cfg, ["data.caption_field=text"]))


def test_a_config_on_a_remote_filesystem_is_read_through_gfile():
    import tensorflow as tf

    path = "ram://configs/remote.yaml"
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("task: retrieval\nmodel:\n  embedding_dim: 48\n")
    assert load_experiment(path).model.embedding_dim == 48
    with pytest.raises(FileNotFoundError, match="ram://configs/missing.yaml"):
        load_experiment("ram://configs/missing.yaml")


@pytest.mark.parametrize(
    "override, named",
    [
        ("export.model_name=models/localizer", "export.model_name"),
        ("export.warmup_requests=1001", "warmup_requests"),
        ("export.enabled=maybe", "export.enabled"),
    ],
)
def test_a_bad_export_setting_stops_before_any_work(override, named):
    with pytest.raises((hyperparams.ConfigError, ValueError), match=named):
        load_experiment(overrides=[override])
