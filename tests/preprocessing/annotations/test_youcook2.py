"""Tests of the YouCook2 reader."""

import pytest

from preprocessing.annotations import ReadStats, read_annotations
from preprocessing.records import Caption
from tests.preprocessing.annotations.helpers import kinds, read_all, reason_of, write_json


def test_youcook2_subsets_and_rejects(tmp_path):
    database = {
        "yc_train": {
            "duration": 100.0,
            "subset": "training",
            "recipe_type": "113",
            "annotations": [
                {"segment": [10, 20], "id": 0, "sentence": "spread margarine on bread"},
                {"segment": [90, 101], "id": 1, "sentence": "cut the sandwich "},
                {"segment": [30, 20], "id": 2, "sentence": "reversed"},
                {"id": 3, "sentence": "no segment"},
            ],
        },
        "yc_val": {"duration": 50, "subset": "validation", "annotations": [{"segment": [0, 5], "sentence": "boil"}]},
        "yc_test": {"duration": 50, "subset": "testing", "annotations": []},
        "yc_weird": {"duration": 50, "subset": "holdout", "annotations": []},
        "yc_nolist": {"duration": 50, "subset": "training", "annotations": {"segment": [0, 1]}},
    }
    path = write_json(tmp_path / "yc.json", {"database": database, "version": "1.0"})
    videos, rejected, stats = read_all("youcook2", path)
    assert {k: v.split for k, v in videos.items()} == {"yc_train": "train", "yc_val": "val", "yc_test": "test"}
    assert videos["yc_train"].captions == (
        Caption(10.0, 20.0, "spread margarine on bread"),
        Caption(90.0, 100.0, "cut the sandwich"),
    )
    assert videos["yc_test"].captions == () and videos["yc_val"].source == "youcook2"
    assert kinds(rejected) == {"end_before_start": 1, "malformed": 2, "bad_split": 1}
    assert "'holdout'" in reason_of(rejected, "yc_weird") and "'training'" in reason_of(rejected, "yc_weird")
    assert stats == ReadStats(videos=3, captions=3, clamped=1, rejected=kinds(rejected))
    with pytest.raises(ValueError, match="needs a top-level 'database' key"):
        list(read_annotations("youcook2", write_json(tmp_path / "x.json", {"videos": {}})))
