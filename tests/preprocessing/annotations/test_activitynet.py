"""Tests of the ActivityNet Captions reader, on made-up entries and on the real val_1 file."""

import collections
import json

import pytest

from preprocessing.annotations import ReadStats, read_annotations
from preprocessing.records import Caption
from tests.preprocessing.annotations.helpers import kinds, read_all, reason_of, write


def test_activitynet_small(tmp_path):
    data = {
        "v_ok": {
            "duration": 20.0,
            "timestamps": [[0, 5.5], [4.0, 20.01], [3.0, 2.0], [1.0, "4.0"], [1.0], [-0.5, 3]],
            "sentences": ["  A man  talks.", " He\nwaves.", "reversed", "string time", "short pair", "negative"],
        },
        "v_unlabeled": {"duration": 9.0, "timestamps": [], "sentences": []},
        "v_mismatch": {"duration": 9.0, "timestamps": [[0, 1]], "sentences": []},
        "v_noduration": {"timestamps": [[0, 1]], "sentences": ["x"]},
        "v_badduration": {"duration": -3, "timestamps": [[0, 1]], "sentences": ["x"]},
        "v_list": [1, 2],
        "v_allbad": {"duration": 5.0, "timestamps": [[6, 7], [1, 2]], "sentences": ["late", ""]},
    }
    text = json.dumps(data)
    # A duplicated key, which json.load would silently collapse to the last value.
    text = text[:-1] + ', "v_dup": {"duration": 3, "timestamps": [], "sentences": []}'
    text += ', "v_dup": {"duration": 4, "timestamps": [], "sentences": []}}'
    path = write(tmp_path / "val.json", text)
    videos, rejected, stats = read_all("activitynet", path, split="val")

    assert sorted(videos) == ["v_ok", "v_unlabeled"]
    assert videos["v_ok"].captions == (Caption(0.0, 5.5, "A man talks."), Caption(4.0, 20.0, "He waves."))
    assert videos["v_unlabeled"].captions == ()
    assert (videos["v_ok"].split, videos["v_ok"].source, videos["v_ok"].language) == ("val", "activitynet", "en")
    assert kinds(rejected) == {
        "end_before_start": 1,
        "bad_time": 1,
        "malformed": 4,  # short pair, mismatch, missing duration, entry is a list
        "negative_start": 1,
        "bad_duration": 1,
        "start_past_duration": 1,
        "empty_text": 1,
        "all_captions_rejected": 1,
        "duplicate_id": 2,
    }
    assert stats.clamped == 1 and stats.captions == 2 and stats.videos == 2
    assert "'4.0' is a string" in reason_of(rejected, "string time")
    assert "1 timestamps but 0 sentences" in reason_of(rejected, "v_mismatch")
    assert "['duration']" in reason_of(rejected, "v_noduration")
    assert "occurs 2 times" in [r for r in rejected if r.input == "v_dup"][0].reason
    assert "duration -3" in reason_of(rejected, "v_badduration")


def test_activitynet_whole_file_errors(tmp_path):
    with pytest.raises(ValueError, match="not a UTF-8 JSON file"):
        list(read_annotations("activitynet", write(tmp_path / "a.json", "{oops"), split="val"))
    with pytest.raises(ValueError, match="top level must be a JSON object, got list"):
        list(read_annotations("activitynet", write(tmp_path / "b.json", "[]"), split="val"))


# Derived once with a separate script over activitynet_captions_val_1.json: every entry
# has keys duration/timestamps/sentences, equal list lengths, [start, end] numeric with
# 0 <= start < end, start < duration, and non-empty sentences.
# Full file: 4917 entries, 17505 captions. 134 ends exceed the duration: 5 by 0.01 s, 129
# by float rounding only (durations stored as e.g. 95.03999999999999 beside an end of
# 95.04); 3 videos have all their captions among those 134. 11639 sentences carry stray
# leading/trailing spaces.
# Excerpt (tests/data/annotations: the first 100 entries and the 116 with an end past the
# duration, 2 of which are among the first 100): 214 entries, 777 captions, the same 134
# ends past the duration and the same 3 videos; 501 sentences with stray spaces.
ActivityNetCounts = collections.namedtuple("ActivityNetCounts", "videos captions clamped videos_all_past_end")
ACTIVITYNET = {
    "excerpt": ActivityNetCounts(videos=214, captions=777, clamped=134, videos_all_past_end=3),
    "full": ActivityNetCounts(videos=4917, captions=17505, clamped=134, videos_all_past_end=3),
}


def test_real_activitynet_every_caption_read_or_rejected(real_annotation_files):
    which, root = real_annotation_files
    n = ACTIVITYNET[which]
    path = root / "activitynet_captions_val_1.json"
    with open(path) as f:
        raw = json.load(f)
    assert len(raw) == n.videos and sum(len(e["sentences"]) for e in raw.values()) == n.captions
    videos, rejected, stats = read_all("activitynet", path, split="val")
    assert rejected == []
    assert stats == ReadStats(videos=n.videos, captions=n.captions, clamped=n.clamped)
    assert list(videos) == list(raw)  # file order
    for v in videos.values():
        assert all(0 <= c.start < c.end <= v.duration for c in v.captions)
        assert all(c.text and c.text == " ".join(c.text.split()) for c in v.captions)
    # First entry of the file; its second sentence starts with two stray spaces.
    first = videos["v_uqiMw7tQ1Cc"]
    assert first.duration == 55.15 and first.captions[1] == Caption(
        13.79, 54.32, "The coach helps the guy in red with the proper body placement and lifting technique."
    )
    # Duration 107.03999999999999, ends of 107.04: clamped, by float rounding only.
    assert [c.end for c in videos["v_gMLA3a0FMS0"].captions] == [107.03999999999999] * 2

    # With no tolerance, exactly the clamped captions become refusals.
    videos, rejected, stats = read_all("activitynet", path, split="val", max_overshoot=0.0)
    assert kinds(rejected) == {
        "end_past_duration": n.clamped,
        "all_captions_rejected": n.videos_all_past_end,
    }
    assert stats.captions == n.captions - n.clamped and stats.clamped == 0
    assert len(videos) == n.videos - n.videos_all_past_end
    assert "v_gMLA3a0FMS0" not in videos
