"""Shared pytest setup: quiet TF logs, repo root on sys.path, shared data paths."""

import os
import pathlib

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
    from preprocessing import synthetic

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
