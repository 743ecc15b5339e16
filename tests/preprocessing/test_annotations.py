"""Tests of the annotation readers, the reader registry and media path resolution."""

import collections
import json
import math
import os
import subprocess
import sys

import pytest

from preprocessing import annotations
from preprocessing.annotations import ReadStats, read_annotations, resolve_media_path
from preprocessing.records import Caption, Rejected, VideoAnnotation

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read(fmt, path, **kwargs):
    """Reads everything; returns (videos by id, rejected list, stats)."""
    stats = ReadStats()
    items = list(read_annotations(fmt, str(path), stats=stats, **kwargs))
    videos = [i for i in items if isinstance(i, VideoAnnotation)]
    rejected = [i for i in items if isinstance(i, Rejected)]
    assert len(videos) + len(rejected) == len(items)
    by_id = {v.video_id: v for v in videos}
    assert len(by_id) == len(videos), "a video id was emitted twice"
    return by_id, rejected, stats


def _kinds(rejected):
    return collections.Counter(r.reason.split(":", 1)[0] for r in rejected)


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def _write_json(path, obj):
    return _write(path, json.dumps(obj))


def _reason_of(rejected, needle):
    """The one reason whose input contains `needle`."""
    found = [r.reason for r in rejected if needle in r.input]
    assert len(found) == 1, (needle, found)
    return found[0]


# ---------------------------------------------------------------- Charades-STA

CHARADES_DURATIONS = 'id,subject,script,length\nAAA,s1,"sits, then stands",30.0\nBBB,s2,x,12.5\nCCC,s3,x,20\n'


def test_charades_sta_groups_clamps_and_rejects_every_bad_line(tmp_path):
    durations = _write(tmp_path / "d.csv", CHARADES_DURATIONS)
    lines = [
        "AAA 1.0 5.0##person opens a door.",  # 1 ok
        "BBB 2.0 13.9##  person   sits down. ",  # 2 ok, clamped 13.9 -> 12.5, spaces normalized
        "AAA 5.0 30.5##person walks.",  # 3 ok, clamped
        "AAA 1.0 5.0 person without separator",  # 4 malformed: no ##
        "AAA 1.0 5.0##one##two",  # 5 malformed: two ##
        "AAA 1.0##missing end",  # 6 malformed: 2 fields
        "AAA 1.0 5.0 extra##four fields",  # 7 malformed: 4 fields
        "AAA one 5.0##non numeric start",  # 8 bad_time
        "AAA 1.0 nan##nan end",  # 9 bad_time
        "AAA 1.0 inf##inf end",  # 10 bad_time
        "AAA 6.0 4.0##reversed",  # 11 end_before_start
        "AAA -1.0 4.0##negative",  # 12 negative_start
        "AAA 3.0 3.0##zero length",  # 13 zero_length
        "AAA 30.0 31.0##starts at the end",  # 14 start_past_duration
        "AAA 20.0 32.5##ends far past",  # 15 end_past_duration (2.5 s > 2.0 s)
        "AAA 1.0 2.0##   ",  # 16 empty_text
        "",  # 17 malformed: blank line
        "ZZZ 1.0 2.0##no duration",  # 18 unknown_duration
        "ZZZ 3.0 4.0##no duration either",  # 19 unknown_duration
        "CCC 25.0 26.0##past the end",  # 20 start_past_duration -> CCC all rejected
    ]
    path = tmp_path / "sta.txt"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"AAA 1.0 2.0##caf\xe9 latin-1\n")  # 21 not UTF-8
    videos, rejected, stats = _read("charades_sta", path, durations=durations, split="test")

    assert sorted(videos) == ["AAA", "BBB"]
    aaa, bbb = videos["AAA"], videos["BBB"]
    assert aaa.captions == (Caption(1.0, 5.0, "person opens a door."), Caption(5.0, 30.0, "person walks."))
    assert bbb.captions == (Caption(2.0, 12.5, "person sits down."),)
    assert (aaa.duration, bbb.duration) == (30.0, 12.5)
    assert (aaa.split, aaa.language, aaa.source, aaa.media_path) == ("test", "en", "charades_sta", None)

    line_rejects = [r for r in rejected if not r.reason.startswith("all_captions_rejected")]
    assert len(line_rejects) + stats.captions == len(lines) + 1  # every line read or rejected
    assert _kinds(rejected) == {
        "malformed": 6,
        "bad_time": 3,
        "end_before_start": 1,
        "negative_start": 1,
        "zero_length": 1,
        "start_past_duration": 2,
        "end_past_duration": 1,
        "empty_text": 1,
        "unknown_duration": 2,
        "all_captions_rejected": 2,
    }
    assert stats == ReadStats(videos=2, captions=3, clamped=2, rejected=_kinds(rejected))
    assert {r.stage for r in rejected} == {"ReadAnnotations"}
    assert sorted(r.input for r in rejected if r.reason.startswith("all_captions_rejected")) == ["CCC", "ZZZ"]
    # Reasons name the offending value and where it is.
    assert "'one'" in _reason_of(rejected, "non numeric start")
    assert "end 4.0 < start 6.0" in _reason_of(rejected, "reversed")
    assert "end 32.5" in _reason_of(rejected, "ends far past") and "max_overshoot 2.0" in _reason_of(
        rejected, "ends far past"
    )
    assert "'ZZZ'" in _reason_of(rejected, "no duration either") and "d.csv" in _reason_of(
        rejected, "no duration either"
    )
    assert f"line 13 of {path}" in _reason_of(rejected, "zero length")
    assert "not UTF-8" in _reason_of(rejected, "caf")


def test_charades_sta_durations_csv_variants(tmp_path):
    # BOM, a `duration` column, an unusable value and a conflicting duplicate.
    durations = tmp_path / "d.csv"
    durations.write_bytes("\ufeffid,duration\nAAA,10\nBBB,abc\nCCC,5\nCCC,6\nDDD,7\nDDD,7\n".encode("utf-8"))
    path = tmp_path / "sta.txt"  # also written with a BOM and CRLF line ends
    path.write_bytes("\ufeffAAA 1 2##a\r\nBBB 1 2##b\r\nCCC 1 2##c\r\nDDD 1 2##d\r\n".encode("utf-8"))
    videos, rejected, stats = _read("charades_sta", path, durations=str(durations), split="val", language="")
    assert videos["AAA"].captions == (Caption(1.0, 2.0, "a"),)
    assert sorted(videos) == ["AAA", "DDD"] and videos["DDD"].duration == 7.0
    assert videos["AAA"].split == "val" and videos["AAA"].language == ""
    assert _kinds(rejected) == {"bad_duration": 1, "conflicting_duration": 1, "all_captions_rejected": 2}
    assert "'abc'" in _reason_of(rejected, "BBB 1 2")
    assert "BBB 1 2##b" in [r.input for r in rejected]  # line ends are not part of the input
    assert "5.0" in _reason_of(rejected, "CCC 1 2") and "'6'" in _reason_of(rejected, "CCC 1 2")


def test_charades_sta_csv_without_columns_and_missing_files(tmp_path):
    sta = _write(tmp_path / "sta.txt", "AAA 1 2##a\n")
    bad_csv = _write(tmp_path / "d.csv", "video,seconds\nAAA,3\n")
    with pytest.raises(ValueError, match=r"columns \['video', 'seconds'\].*'id'"):
        list(read_annotations("charades_sta", sta, durations=bad_csv, split="test"))
    # Missing files and bad arguments fail when the reader is called, not when it is iterated.
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_annotations("charades_sta", sta, durations=str(tmp_path / "nope.csv"), split="test")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_annotations("charades_sta", str(tmp_path / "nope.txt"), durations=bad_csv, split="test")
    with pytest.raises(ValueError, match=r"split 'testing' is not one of \['train', 'val', 'test'\]"):
        read_annotations("charades_sta", sta, durations=bad_csv, split="testing")
    with pytest.raises(ValueError, match="max_overshoot must be a number of seconds >= 0, got -1"):
        read_annotations("charades_sta", sta, durations=bad_csv, split="test", max_overshoot=-1)


# Derived once by reading the files with a separate script (not this module): split each
# line of charades_sta_test.txt at '##' and on whitespace, look the video up in
# charades_test_durations.csv, and apply the policy's rules. Every line is well formed
# with start < end, start >= 0, start < length and a non-empty sentence, and every video
# is in the CSV (no duplicate ids).
# Full file: 3720 lines, 1334 distinct videos; 562 ends exceed the video's length, by at
# most 1.5 s (228 of them by more than 1.0 s, in 43 videos whose every caption does).
# Excerpt (tests/data/annotations: the first 120 videos and the 9 whose sentence holds a
# doubled space): 336 lines, 129 videos; 46 ends past the length, by at most 1.42 s, 19
# by more than 1.0 s, and the single captions of YSKX3 (18.0 > 16.62) and both of YOCRB
# (36.0 > 34.62) are all their videos have.
CharadesCounts = collections.namedtuple("CharadesCounts", "lines videos clamped over_1s videos_all_over_1s")
CHARADES = {
    "excerpt": CharadesCounts(lines=336, videos=129, clamped=46, over_1s=19, videos_all_over_1s=2),
    "full": CharadesCounts(lines=3720, videos=1334, clamped=562, over_1s=228, videos_all_over_1s=43),
}


def test_real_charades_sta_every_line_read_or_rejected(real_annotation_files):
    which, root = real_annotation_files
    n = CHARADES[which]
    path = root / "charades_sta_test.txt"
    durations = str(root / "charades_test_durations.csv")
    with open(path, "rb") as f:
        assert sum(1 for _ in f) == n.lines
    videos, rejected, stats = _read("charades_sta", path, durations=durations, split="test")
    assert rejected == []
    assert len(videos) == n.videos
    assert stats == ReadStats(videos=n.videos, captions=n.lines, clamped=n.clamped)
    assert sum(len(v.captions) for v in videos.values()) == n.lines
    for v in videos.values():
        assert all(0 <= c.start < c.end <= v.duration and c.text == " ".join(c.text.split()) for c in v.captions)
    # The first line of the file: 3MSZA 24.3 30.4##person turn a light on.
    first = videos["3MSZA"]
    assert first.captions[0] == Caption(24.3, 30.4, "person turn a light on.")
    assert (first.split, first.language, first.source) == ("test", "en", "charades_sta")
    # Line 1317 of the full file: D7W4E 6.5 15.7##a person puts a cup into a  cupboard.
    assert videos["D7W4E"].captions[0] == Caption(6.5, 15.7, "a person puts a cup into a cupboard.")
    # YSKX3 13.0 18.0 in a video of 16.62 s: clamped.
    assert videos["YSKX3"].captions == (Caption(13.0, 16.62, "person throws pillow on it."),)

    # A tighter tolerance turns the largest overshoots into refusals, each line exactly once.
    videos, rejected, stats = _read("charades_sta", path, durations=durations, split="test", max_overshoot=1.0)
    assert _kinds(rejected) == {"end_past_duration": n.over_1s, "all_captions_rejected": n.videos_all_over_1s}
    assert stats.captions + n.over_1s == n.lines
    assert stats.clamped == n.clamped - n.over_1s
    assert len(videos) == n.videos - n.videos_all_over_1s
    assert "YSKX3" not in videos and "YOCRB" not in videos


# ---------------------------------------------------------------- ActivityNet Captions


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
    path = _write(tmp_path / "val.json", text)
    videos, rejected, stats = _read("activitynet", path, split="val")

    assert sorted(videos) == ["v_ok", "v_unlabeled"]
    assert videos["v_ok"].captions == (Caption(0.0, 5.5, "A man talks."), Caption(4.0, 20.0, "He waves."))
    assert videos["v_unlabeled"].captions == ()
    assert (videos["v_ok"].split, videos["v_ok"].source, videos["v_ok"].language) == ("val", "activitynet", "en")
    assert _kinds(rejected) == {
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
    assert "'4.0' is a string" in _reason_of(rejected, "string time")
    assert "1 timestamps but 0 sentences" in _reason_of(rejected, "v_mismatch")
    assert "['duration']" in _reason_of(rejected, "v_noduration")
    assert "occurs 2 times" in [r for r in rejected if r.input == "v_dup"][0].reason
    assert "duration -3" in _reason_of(rejected, "v_badduration")


def test_activitynet_whole_file_errors(tmp_path):
    with pytest.raises(ValueError, match="not a UTF-8 JSON file"):
        list(read_annotations("activitynet", _write(tmp_path / "a.json", "{oops"), split="val"))
    with pytest.raises(ValueError, match="top level must be a JSON object, got list"):
        list(read_annotations("activitynet", _write(tmp_path / "b.json", "[]"), split="val"))


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
    videos, rejected, stats = _read("activitynet", path, split="val")
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
    videos, rejected, stats = _read("activitynet", path, split="val", max_overshoot=0.0)
    assert _kinds(rejected) == {
        "end_past_duration": n.clamped,
        "all_captions_rejected": n.videos_all_past_end,
    }
    assert stats.captions == n.captions - n.clamped and stats.clamped == 0
    assert len(videos) == n.videos - n.videos_all_past_end
    assert "v_gMLA3a0FMS0" not in videos


# ---------------------------------------------------------------- YouCook2


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
    path = _write_json(tmp_path / "yc.json", {"database": database, "version": "1.0"})
    videos, rejected, stats = _read("youcook2", path)
    assert {k: v.split for k, v in videos.items()} == {"yc_train": "train", "yc_val": "val", "yc_test": "test"}
    assert videos["yc_train"].captions == (
        Caption(10.0, 20.0, "spread margarine on bread"),
        Caption(90.0, 100.0, "cut the sandwich"),
    )
    assert videos["yc_test"].captions == () and videos["yc_val"].source == "youcook2"
    assert _kinds(rejected) == {"end_before_start": 1, "malformed": 2, "bad_split": 1}
    assert "'holdout'" in _reason_of(rejected, "yc_weird") and "'training'" in _reason_of(rejected, "yc_weird")
    assert stats == ReadStats(videos=3, captions=3, clamped=1, rejected=_kinds(rejected))
    with pytest.raises(ValueError, match="needs a top-level 'database' key"):
        list(read_annotations("youcook2", _write_json(tmp_path / "x.json", {"videos": {}})))


# ---------------------------------------------------------------- QVHighlights


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
    path = _write(tmp_path / "q.jsonl", "\n".join(lines) + "\n")
    videos, rejected, stats = _read("qvhighlights", path, split="train")
    assert sorted(videos) == ["vidA_60.0_210.0", "vidB_0.0_150.0"]
    assert videos["vidA_60.0_210.0"].captions == (
        Caption(0.0, 4.0, "a man rides a bike"),
        Caption(148.0, 150.0, "a man rides a bike"),
        Caption(20.0, 30.0, "the man waves"),
    )
    assert videos["vidA_60.0_210.0"].duration == 150.0 and videos["vidB_0.0_150.0"].split == "train"
    assert _kinds(rejected) == {
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
    assert "140" in _reason_of(rejected, '"duration": 140') and "150" in _reason_of(rejected, '"duration": 140')
    assert stats.captions == 4 and stats.clamped == 1 and stats.videos == 2


# ---------------------------------------------------------------- HowTo100M


def test_howto100m_durations_from_csv_or_last_end(tmp_path):
    data = {
        "h1": {"start": [0.0, 4.2, 9.0], "end": [4.0, 8.5, 8.0], "text": ["first", " second ", "reversed"]},
        "h2": {"start": [1, 2], "end": [3, 3], "text": ["a", math.nan]},
        "h3": {"start": [1], "end": [2, 3], "text": ["a"]},
        "h4": {"start": [], "end": [], "text": []},
        "h5": {"start": [0], "end": [1]},
    }
    path = _write_json(tmp_path / "caption.json", data)
    videos, rejected, stats = _read("howto100m", path, split="train")
    # Without a CSV the duration is the last valid end.
    assert videos["h1"].duration == 8.5 and videos["h2"].duration == 3.0
    assert videos["h1"].captions == (Caption(0.0, 4.0, "first"), Caption(4.2, 8.5, "second"))
    assert (videos["h1"].language, videos["h1"].source) == ("en", "howto100m")
    assert _kinds(rejected) == {"end_before_start": 1, "malformed": 3, "unknown_duration": 1}
    assert "nan is not a string" in _reason_of(rejected, "NaN")
    assert "1 start, 2 end, 1 text" in _reason_of(rejected, "h3")
    assert "no durations CSV" in _reason_of(rejected, "h4")
    assert stats.videos == 2 and stats.captions == 3

    durations = _write(tmp_path / "d.csv", "id,duration\nh1,8.0\nh4,60\n")
    videos, rejected, stats = _read("howto100m", path, split="train", durations=durations, language="hi")
    assert videos["h1"].duration == 8.0 and videos["h1"].captions[1] == Caption(4.2, 8.0, "second")
    assert videos["h4"].captions == () and videos["h4"].duration == 60.0 and videos["h4"].language == "hi"
    assert _kinds(rejected) == {
        "end_before_start": 1,
        "malformed": 3,  # h2's nan text, h3, h5
        "unknown_duration": 1,  # h2's first caption
        "all_captions_rejected": 1,  # h2
    }
    assert stats.clamped == 1


# ---------------------------------------------------------------- built-in corpus


def _builtin_corpus(tmp_path, entries, splits):
    corpus = tmp_path / "corpus"
    (corpus / "videos").mkdir(parents=True)
    _write_json(corpus / "annotations.json", entries)
    _write_json(corpus / "splits.json", splits)
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
    videos, rejected, stats = _read("builtin", corpus, language="en")
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
    assert _kinds(rejected) == {"bad_split": 2, "malformed": 2, "missing_annotation": 1}
    assert "['train', 'val']" in _reason_of(rejected, "xx_002")
    assert "in no split" in _reason_of(rejected, "xx_003")
    assert "audio_dependent[0] = 2" in _reason_of(rejected, "xx_004")
    assert "'sentences_en' must be a list of 1" in _reason_of(rejected, "xx_005")
    assert "'gone'" in _reason_of(rejected, "gone")
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
    _write_json(corpus / "splits.json", {"dev": []})
    with pytest.raises(ValueError, match=r"split 'dev' is not one of \['train', 'val', 'test'\]"):
        list(read_annotations("builtin", str(corpus)))


# ---------------------------------------------------------------- registry


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
    path = _write_json(tmp_path / "a.json", {})
    with pytest.raises(ValueError, match=r"'activitynet'.*split"):
        read_annotations("activitynet", path)  # split is required
    with pytest.raises(ValueError, match=r"'activitynet'.*durations.*It takes: split, language='en'"):
        read_annotations("activitynet", path, split="val", durations="d.csv")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_annotations("activitynet", str(tmp_path / "missing.json"), split="val")


def test_local_reading_does_not_import_tensorflow(tmp_path):
    path = _write_json(tmp_path / "a.json", {"v": {"duration": 3, "timestamps": [[0, 1]], "sentences": ["x"]}})
    code = (
        "import sys\n"
        "from preprocessing import annotations as a\n"
        f"items = list(a.read_annotations('activitynet', {path!r}, split='val'))\n"
        "assert len(items) == 1 and items[0].captions, items\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


# ---------------------------------------------------------------- media paths


def _ann(video_id, media_path=None):
    return VideoAnnotation(video_id=video_id, duration=1.0, captions=(), media_path=media_path)


def test_resolve_media_path_by_id_and_media_path(tmp_path):
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    for name in ("a.webm", "a.wav", "b.mp4", "sub/c.mkv"):
        (videos / name).write_bytes(b"\0")
    d = str(videos)
    assert resolve_media_path(d, _ann("a")) == os.path.join(d, "a.webm")  # first existing in the default order
    assert resolve_media_path(d, _ann("a"), extensions=(".wav", ".webm")) == os.path.join(d, "a.wav")
    assert resolve_media_path(d, _ann("x", media_path="sub/c.mkv")) == os.path.join(d, "sub/c.mkv")
    with pytest.raises(FileNotFoundError) as e:
        resolve_media_path(d, _ann("zz"), extensions=(".mp4", ".ogg"))
    assert "'zz'" in str(e.value) and "zz.mp4" in str(e.value) and "zz.ogg" in str(e.value)
    with pytest.raises(FileNotFoundError, match="sub/missing.mp4"):
        resolve_media_path(d, _ann("b", media_path="sub/missing.mp4"))  # media_path wins over the id
    with pytest.raises(FileNotFoundError, match="no such directory"):
        resolve_media_path(str(tmp_path / "nodir"), _ann("b"))
    with pytest.raises(ValueError, match="suffixes like '.mp4'"):
        resolve_media_path(d, _ann("b"), extensions=("mp4",))
    with pytest.raises(ValueError, match="suffixes like '.mp4'"):
        resolve_media_path(d, _ann("b"), extensions=())


def test_resolve_media_path_refuses_escapes(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"\0")
    (videos / "evil.mp4").symlink_to(outside)
    (videos / "inner").symlink_to(tmp_path)  # a directory link that leads out
    (videos / "ok.mp4").write_bytes(b"\0")
    (videos / "alias.mp4").symlink_to(videos / "ok.mp4")  # a link that stays inside is fine
    d = str(videos)
    for ann in (
        _ann("x", media_path=str(outside)),  # absolute
        _ann("x", media_path="../secret.mp4"),
        _ann("x", media_path="sub/../../secret.mp4"),
        _ann("../secret"),  # an id that climbs out
        _ann("evil"),  # a symlinked file pointing outside
        _ann("x", media_path="inner/secret.mp4"),  # a symlinked dir pointing outside
        _ann("x", media_path="."),  # the directory itself
    ):
        with pytest.raises(ValueError, match="is not a file inside videos dir"):
            resolve_media_path(d, ann)
    assert resolve_media_path(d, _ann("alias")) == os.path.join(d, "alias.mp4")
    # A symlinked videos dir is resolved as a whole.
    (tmp_path / "link").symlink_to(videos)
    assert resolve_media_path(str(tmp_path / "link"), _ann("ok")) == os.path.join(str(tmp_path / "link"), "ok.mp4")
    # Remote paths are checked lexically, before any file system is touched.
    with pytest.raises(ValueError, match="climbs out"):
        resolve_media_path("gs://bucket/videos", _ann("x", media_path="a/../../b.mp4"))
    with pytest.raises(ValueError, match="absolute"):
        resolve_media_path("gs://bucket/videos", _ann("x", media_path="/etc/passwd"))


def test_url_paths_go_through_gfile(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "v1.mkv").write_bytes(b"\0")
    url = f"file://{videos}"
    assert resolve_media_path(url, _ann("v1")) == f"{url}/v1.mkv"
    with pytest.raises(FileNotFoundError, match=f"{url}/v2.mp4"):
        resolve_media_path(url, _ann("v2"))
    line = json.dumps({"qid": 1, "query": "q", "duration": 10, "vid": "v1", "relevant_windows": [[0, 2]]})
    path = _write(tmp_path / "q.jsonl", line + "\n")
    videos_read, rejected, _ = _read("qvhighlights", f"file://{path}", split="val")
    assert rejected == [] and videos_read["v1"].captions == (Caption(0.0, 2.0, "q"),)
