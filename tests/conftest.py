"""Shared pytest setup: quiet TF logs, shared data paths, and the corpus, records and jobs built once per session."""

import os
import pathlib
import shutil

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


REAL_ANNOTATIONS = REPO / "tests" / "data" / "annotations"


@pytest.fixture(scope="session")
def real_annotations() -> pathlib.Path:
    """Excerpts of the real public annotation files, kept in the repo (tests/data/annotations/README.md)."""
    return REAL_ANNOTATIONS


@pytest.fixture(scope="session")
def shared_annotations() -> pathlib.Path:
    """The full real annotation files (../shared/data/annotations); the test is skipped where they are absent."""
    path = SHARED_DATA / "annotations"
    if not path.is_dir():
        pytest.skip(
            f"full shared annotation files not found at {path}; "
            f"the tests on the repo excerpts ({REAL_ANNOTATIONS}) still run"
        )
    return path


@pytest.fixture(params=["excerpt", "full"])
def real_annotation_files(request) -> tuple[str, pathlib.Path]:
    """Each set of real annotation files in turn: ("excerpt", the repo's), ("full", the shared ones)."""
    fixture = {"excerpt": "real_annotations", "full": "shared_annotations"}[request.param]
    return request.param, request.getfixturevalue(fixture)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> pathlib.Path:
    """A small built-in corpus (10 videos of 16-24 s, English and Japanese)."""
    from corpus import synthetic

    out = tmp_path_factory.mktemp("corpus")
    cfg = synthetic.SyntheticConfig(
        out=str(out),
        videos=10,
        languages="en=1,ja=1",
        seed=3,
        min_duration=16.0,
        max_duration=24.0,
        split="0.6,0.2,0.2",
        workers=2,
    )
    synthetic.generate(cfg, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_records(tiny_corpus, tmp_path_factory) -> pathlib.Path:
    """The tiny corpus preprocessed by the Beam job (2 shards per split)."""
    from preprocessing import pipeline

    out = tmp_path_factory.mktemp("records")
    argv = ["--annotations", str(tiny_corpus), "--format", "builtin", "--videos_dir", str(tiny_corpus)]
    pipeline.run(argv + ["--output_dir", str(out), "--set", "num_shards=2"])
    return out


def _trained(tmp_path_factory, records, config, overrides, name):
    from tests import jobs
    from trainer import train_lib

    job = tmp_path_factory.mktemp(name)
    out = train_lib.run_experiment(jobs.experiment_config(config, records, overrides), str(job))
    return job, out


def _copy(trained, tmp_path, name):
    job, out = trained
    copy = tmp_path / name
    shutil.copytree(job, copy)
    return copy, out


@pytest.fixture(scope="session")
def malta_trained(tiny_records, tmp_path_factory):
    """A tiny MALTA job trained once per session (jobs.MALTA_JOB); use `malta_job`, which copies it."""
    from tests import jobs

    return _trained(tmp_path_factory, tiny_records, jobs.MALTA, jobs.MALTA_JOB, "malta_job")


@pytest.fixture(scope="session")
def avlnet_trained(tiny_records, tmp_path_factory):
    """A tiny AVLnet job trained once per session (jobs.AVLNET_JOB); use `avlnet_job`, which copies it."""
    from tests import jobs

    return _trained(tmp_path_factory, tiny_records, jobs.AVLNET, jobs.AVLNET_JOB, "avlnet_job")


@pytest.fixture
def malta_job(malta_trained, tmp_path):
    """(job dir, run_experiment's result): this test's own copy of the session's MALTA job."""
    return _copy(malta_trained, tmp_path, "malta_job")


@pytest.fixture
def avlnet_job(avlnet_trained, tmp_path):
    """(job dir, run_experiment's result): this test's own copy of the session's AVLnet job."""
    return _copy(avlnet_trained, tmp_path, "avlnet_job")


# Tests that build a corpus, run the Beam job, train or start a subprocess are end-to-end
# (left out by `make test-fast`): those in these modules or using these fixtures are marked
# here, others by hand.
E2E_MODULES = {"test_trainer_e2e.py"}
E2E_FIXTURES = {"tiny_corpus", "tiny_records", "malta_trained", "avlnet_trained", "corpus"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in E2E_MODULES or E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
