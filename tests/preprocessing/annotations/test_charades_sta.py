"""Tests of the Charades-STA reader, on made-up lines and on the real test queries."""

import collections

import pytest

from preprocessing.annotations import ReadStats, read_annotations
from preprocessing.records import Caption
from tests.preprocessing.annotations.helpers import kinds, read_all, reason_of, write

CHARADES_DURATIONS = 'id,subject,script,length\nAAA,s1,"sits, then stands",30.0\nBBB,s2,x,12.5\nCCC,s3,x,20\n'


def test_charades_sta_groups_clamps_and_rejects_every_bad_line(tmp_path):
    durations = write(tmp_path / "d.csv", CHARADES_DURATIONS)
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
    videos, rejected, stats = read_all("charades_sta", path, durations=durations, split="test")

    assert sorted(videos) == ["AAA", "BBB"]
    aaa, bbb = videos["AAA"], videos["BBB"]
    assert aaa.captions == (Caption(1.0, 5.0, "person opens a door."), Caption(5.0, 30.0, "person walks."))
    assert bbb.captions == (Caption(2.0, 12.5, "person sits down."),)
    assert (aaa.duration, bbb.duration) == (30.0, 12.5)
    assert (aaa.split, aaa.language, aaa.source, aaa.media_path) == ("test", "en", "charades_sta", None)

    line_rejects = [r for r in rejected if not r.reason.startswith("all_captions_rejected")]
    assert len(line_rejects) + stats.captions == len(lines) + 1  # every line read or rejected
    assert kinds(rejected) == {
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
    assert stats == ReadStats(videos=2, captions=3, clamped=2, rejected=kinds(rejected))
    assert {r.stage for r in rejected} == {"ReadAnnotations"}
    assert sorted(r.input for r in rejected if r.reason.startswith("all_captions_rejected")) == ["CCC", "ZZZ"]
    # Reasons name the offending value and where it is.
    assert "'one'" in reason_of(rejected, "non numeric start")
    assert "end 4.0 < start 6.0" in reason_of(rejected, "reversed")
    assert "end 32.5" in reason_of(rejected, "ends far past") and "max_overshoot 2.0" in reason_of(
        rejected, "ends far past"
    )
    assert "'ZZZ'" in reason_of(rejected, "no duration either") and "d.csv" in reason_of(rejected, "no duration either")
    assert f"line 13 of {path}" in reason_of(rejected, "zero length")
    assert "not UTF-8" in reason_of(rejected, "caf")


def test_charades_sta_durations_csv_variants(tmp_path):
    # BOM, a `duration` column, an unusable value and a conflicting duplicate.
    durations = tmp_path / "d.csv"
    durations.write_bytes("\ufeffid,duration\nAAA,10\nBBB,abc\nCCC,5\nCCC,6\nDDD,7\nDDD,7\n".encode("utf-8"))
    path = tmp_path / "sta.txt"  # also written with a BOM and CRLF line ends
    path.write_bytes("\ufeffAAA 1 2##a\r\nBBB 1 2##b\r\nCCC 1 2##c\r\nDDD 1 2##d\r\n".encode("utf-8"))
    videos, rejected, stats = read_all("charades_sta", path, durations=str(durations), split="val", language="")
    assert videos["AAA"].captions == (Caption(1.0, 2.0, "a"),)
    assert sorted(videos) == ["AAA", "DDD"] and videos["DDD"].duration == 7.0
    assert videos["AAA"].split == "val" and videos["AAA"].language == ""
    assert kinds(rejected) == {"bad_duration": 1, "conflicting_duration": 1, "all_captions_rejected": 2}
    assert "'abc'" in reason_of(rejected, "BBB 1 2")
    assert "BBB 1 2##b" in [r.input for r in rejected]  # line ends are not part of the input
    assert "5.0" in reason_of(rejected, "CCC 1 2") and "'6'" in reason_of(rejected, "CCC 1 2")


def test_charades_sta_csv_without_columns_and_missing_files(tmp_path):
    sta = write(tmp_path / "sta.txt", "AAA 1 2##a\n")
    bad_csv = write(tmp_path / "d.csv", "video,seconds\nAAA,3\n")
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
    videos, rejected, stats = read_all("charades_sta", path, durations=durations, split="test")
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
    videos, rejected, stats = read_all("charades_sta", path, durations=durations, split="test", max_overshoot=1.0)
    assert kinds(rejected) == {"end_past_duration": n.over_1s, "all_captions_rejected": n.videos_all_over_1s}
    assert stats.captions + n.over_1s == n.lines
    assert stats.clamped == n.clamped - n.over_1s
    assert len(videos) == n.videos - n.videos_all_over_1s
    assert "YSKX3" not in videos and "YOCRB" not in videos
