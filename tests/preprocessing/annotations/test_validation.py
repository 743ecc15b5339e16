"""Tests of the validation policy that every reader shares: the overshoot tolerance."""

import inspect

from preprocessing import annotations
from preprocessing.config import PreprocessConfig
from preprocessing.records import Caption
from tests.preprocessing.annotations.helpers import kinds, read_all, reason_of, write_json


def test_one_overshoot_tolerance_for_readers_and_job():
    default = PreprocessConfig().max_overshoot_seconds
    assert annotations.DEFAULT_MAX_OVERSHOOT == default
    for name, reader in annotations.READERS.items():
        assert inspect.signature(reader).parameters["max_overshoot"].default == default, name


def test_ends_within_the_default_overshoot_are_clamped_and_beyond_it_refused(tmp_path):
    entry = {"duration": 10.0, "timestamps": [[1, 10.5], [2, 12.0], [3, 12.25]], "sentences": ["a", "b", "c"]}
    path = write_json(tmp_path / "a.json", {"v": entry})
    videos, rejected, stats = read_all("activitynet", path, split="val")
    assert videos["v"].captions == (Caption(1.0, 10.0, "a"), Caption(2.0, 10.0, "b"))
    assert kinds(rejected) == {"end_past_duration": 1} and stats.clamped == 2
    assert "end 12.25 is 2.25 s past duration 10.0, more than max_overshoot 2.0 s" in reason_of(rejected, "12.25")
