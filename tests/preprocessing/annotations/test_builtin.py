"""Tests of the built-in corpus reader."""

import os

import pytest

from preprocessing.annotations import read_annotations, resolve_media_path
from preprocessing.records import Caption, VideoAnnotation
from tests.preprocessing.annotations.helpers import kinds, read_all, reason_of, write_json


def _builtin_corpus(tmp_path, entries, splits):
    corpus = tmp_path / "corpus"
    (corpus / "videos").mkdir(parents=True)
    write_json(corpus / "annotations.json", entries)
    write_json(corpus / "splits.json", splits)
    return corpus


def test_builtin_corpus(tmp_path):
    entries = {
        "mr_000": {
            "duration": 12.0,
            "timestamps": [[0.0, 4.0], [4.0, 12.3]],
            "sentences": ["कांदा चिरा", "तेल गरम करा"],
            "sentences_en": ["chop the onion", " heat the oil "],
            "audio_dependent": [0, 1],
            "steps": ["chop", "heat"],
            "language": "mr",
        },
        "xx_001": {"duration": 5.0, "timestamps": [[0, 1]], "sentences": ["no extras"]},
        "xx_002": {"duration": 5.0, "timestamps": [[0, 1]], "sentences": ["in two splits"]},
        "xx_003": {"duration": 5.0, "timestamps": [[0, 1]], "sentences": ["in none"]},
        "xx_004": {"duration": 5.0, "timestamps": [[0, 1]], "sentences": ["x"], "audio_dependent": [2]},
        "xx_005": {"duration": 5.0, "timestamps": [[0, 1]], "sentences": ["x"], "sentences_en": []},
    }
    splits = {
        "train": ["mr_000", "xx_002", "xx_004", "xx_005"],
        "val": ["xx_001", "xx_002"],
        "test": ["gone"],
    }
    corpus = _builtin_corpus(tmp_path, entries, splits)
    videos, rejected, stats = read_all("builtin", corpus, language="en")
    assert sorted(videos) == ["mr_000", "xx_001"]
    mr = videos["mr_000"]
    assert mr == VideoAnnotation(
        video_id="mr_000",
        duration=12.0,
        captions=(
            Caption(0.0, 4.0, "कांदा चिरा", "chop the onion", 0),
            Caption(4.0, 12.0, "तेल गरम करा", "heat the oil", 1),
        ),
        split="train",
        language="mr",
        source="builtin",
        media_path="videos/mr_000.mp4",
    )
    assert videos["xx_001"].split == "val" and videos["xx_001"].language == "en"
    assert videos["xx_001"].captions == (Caption(0.0, 1.0, "no extras", "", -1),)
    assert kinds(rejected) == {"bad_split": 2, "malformed": 2, "missing_annotation": 1}
    assert "['train', 'val']" in reason_of(rejected, "xx_002")
    assert "in no split" in reason_of(rejected, "xx_003")
    assert "audio_dependent[0] = 2" in reason_of(rejected, "xx_004")
    assert "'sentences_en' must be a list of 1" in reason_of(rejected, "xx_005")
    assert "'gone'" in reason_of(rejected, "gone")
    assert stats.clamped == 1

    # The corpus dir is the videos dir of its media paths.
    (corpus / "videos" / "mr_000.mp4").write_bytes(b"\0")
    assert resolve_media_path(str(corpus), mr) == os.path.join(str(corpus), "videos/mr_000.mp4")


def test_builtin_missing_pieces(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        read_annotations("builtin", str(tmp_path / "absent"))
    corpus = _builtin_corpus(tmp_path, {}, {"train": []})
    os.remove(corpus / "splits.json")
    with pytest.raises(FileNotFoundError, match="splits.json"):
        read_annotations("builtin", str(corpus))
    write_json(corpus / "splits.json", {"dev": []})
    with pytest.raises(ValueError, match=r"split 'dev' is not one of \['train', 'val', 'test'\]"):
        list(read_annotations("builtin", str(corpus)))
