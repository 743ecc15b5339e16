"""Built-in extractors shared by the visual extractor tests, built once per module."""

import pytest

from preprocessing import visual
from preprocessing.config import VisualStreamConfig


@pytest.fixture(scope="module")
def e2d():
    return visual.get_extractor(VisualStreamConfig(extractor="builtin_2d", rate=2.0))


@pytest.fixture(scope="module")
def e3d():
    return visual.get_extractor(VisualStreamConfig(extractor="builtin_3d", rate=2.0, clip_frames=4))
