"""Tests of the QVHighlights reader."""

import json

from preprocessing.records import Caption
from tests.preprocessing.annotations.helpers import kinds, read_all, reason_of, write


def test_qvhighlights_groups_windows_by_video(tmp_path):
    def q(qid, vid, windows, query="a man rides a bike", duration=150):
        obj = {"qid": qid, "query": query, "duration": duration, "vid": vid, "relevant_windows": windows}
        if windows is None:
            del obj["relevant_windows"]
        return json.dumps(obj)

    lines = [
        q(1, "vidA_60.0_210.0", [[0, 4], [148, 152]]),  # 2 captions, second clamped
        q(2, "vidB_0.0_150.0", [[10, 12], [12, 10]]),  # 1 caption, 1 end_before_start
        q(3, "vidA_60.0_210.0", [[20, 30]], query="  the man   waves "),  # 1 caption
        q(4, "vidA_60.0_210.0", [[0, 2]], duration=140),  # conflicting_duration
        q(5, "vidC", [[0, 2]]),  # duplicate_id (with the next line)
        q(5, "vidC", [[2, 4]]),  # duplicate_id
        q(6, "vidD", None),  # no_windows
        q(7, "vidD", []),  # no_windows
        q(8, "vidE", [[0, "2"], [160, 170], [1]]),  # bad_time, start_past_duration, malformed
        "{not json",  # malformed
        "   ",  # malformed (blank)
        json.dumps([1, 2]),  # malformed (not an object)
        json.dumps({"qid": 9, "query": "x", "duration": 10, "relevant_windows": [[0, 1]]}),  # malformed: no vid
    ]
    path = write(tmp_path / "q.jsonl", "\n".join(lines) + "\n")
    videos, rejected, stats = read_all("qvhighlights", path, split="train")
    assert sorted(videos) == ["vidA_60.0_210.0", "vidB_0.0_150.0"]
    assert videos["vidA_60.0_210.0"].captions == (
        Caption(0.0, 4.0, "a man rides a bike"),
        Caption(148.0, 150.0, "a man rides a bike"),
        Caption(20.0, 30.0, "the man waves"),
    )
    assert videos["vidA_60.0_210.0"].duration == 150.0 and videos["vidB_0.0_150.0"].split == "train"
    assert kinds(rejected) == {
        "end_before_start": 1,
        "conflicting_duration": 1,
        "duplicate_id": 2,
        "no_windows": 2,
        "bad_time": 1,
        "start_past_duration": 1,
        "malformed": 5,
        "all_captions_rejected": 2,  # vidC (both lines duplicated), vidE (every window bad)
    }
    video_reasons = {r.input: r.reason for r in rejected if r.reason.startswith("all_captions")}
    assert sorted(video_reasons) == ["vidC", "vidE"]
    assert "all 2 captions of video 'vidC'" in video_reasons["vidC"]
    assert "all 3 captions of video 'vidE'" in video_reasons["vidE"]
    assert "lines [5, 6]" in [r.reason for r in rejected if r.reason.startswith("duplicate_id")][0]
    assert "140" in reason_of(rejected, '"duration": 140') and "150" in reason_of(rejected, '"duration": 140')
    assert stats.captions == 4 and stats.clamped == 1 and stats.videos == 2
