"""Tests of the format registry: names, dispatch and argument errors."""

import pathlib
import subprocess
import sys

import pytest

from preprocessing import annotations
from preprocessing.annotations import read_annotations, register_format
from tests.preprocessing.annotations.helpers import write_json

REPO = pathlib.Path(__file__).resolve().parents[3]


def test_registry_and_argument_errors(tmp_path):
    assert sorted(annotations.READERS) == [
        "activitynet",
        "builtin",
        "charades_sta",
        "howto100m",
        "qvhighlights",
        "youcook2",
    ]
    with pytest.raises(ValueError) as e:
        read_annotations("charades", "x.txt")
    message = str(e.value)
    assert "'charades'" in message
    assert all(name in message for name in annotations.READERS)
    path = write_json(tmp_path / "a.json", {})
    with pytest.raises(ValueError, match=r"'activitynet'.*split"):
        read_annotations("activitynet", path)  # split is required
    with pytest.raises(ValueError, match=r"'activitynet'.*durations.*It takes: split, language='en'"):
        read_annotations("activitynet", path, split="val", durations="d.csv")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_annotations("activitynet", str(tmp_path / "missing.json"), split="val")


def test_local_reading_does_not_import_tensorflow(tmp_path):
    path = write_json(tmp_path / "a.json", {"v": {"duration": 3, "timestamps": [[0, 1]], "sentences": ["x"]}})
    code = (
        "import sys\n"
        "from preprocessing import annotations as a\n"
        f"items = list(a.read_annotations('activitynet', {path!r}, split='val'))\n"
        "assert len(items) == 1 and items[0].captions, items\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_each_format_is_registered_once_from_its_own_module():
    for name, reader in annotations.READERS.items():
        assert reader.__module__ == f"preprocessing.annotations.{name}", (name, reader.__module__)
    with pytest.raises(ValueError, match=r"'charades_sta' is already registered \(by preprocessing.annotations"):
        register_format("charades_sta", looks_like=lambda head: False)(lambda path: iter(()))
    assert annotations.READERS["charades_sta"] is annotations.read_charades_sta
    with pytest.raises(TypeError):
        annotations.READERS["mine"] = annotations.read_activitynet  # formats join only through register_format
