"""Shared pytest setup: quiet TF logs, repo root on sys.path, shared data paths."""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_annotations() -> pathlib.Path:
    """The real public annotation files (../shared/data/annotations)."""
    path = SHARED_DATA / "annotations"
    if not path.is_dir():
        pytest.fail(f"{path} is missing: tests need the shared real annotation files beside the repo.")
    return path
