"""Tests of the HowTo100M ASR captions reader."""

import math

from preprocessing.records import Caption
from tests.preprocessing.annotations.helpers import kinds, read_all, reason_of, write, write_json


def test_howto100m_durations_from_csv_or_last_end(tmp_path):
    data = {
        "h1": {"start": [0.0, 4.2, 9.0], "end": [4.0, 8.5, 8.0], "text": ["first", " second ", "reversed"]},
        "h2": {"start": [1, 2], "end": [3, 3], "text": ["a", math.nan]},
        "h3": {"start": [1], "end": [2, 3], "text": ["a"]},
        "h4": {"start": [], "end": [], "text": []},
        "h5": {"start": [0], "end": [1]},
    }
    path = write_json(tmp_path / "caption.json", data)
    videos, rejected, stats = read_all("howto100m", path, split="train")
    # Without a CSV the duration is the last valid end.
    assert videos["h1"].duration == 8.5 and videos["h2"].duration == 3.0
    assert videos["h1"].captions == (Caption(0.0, 4.0, "first"), Caption(4.2, 8.5, "second"))
    assert (videos["h1"].language, videos["h1"].source) == ("en", "howto100m")
    assert kinds(rejected) == {"end_before_start": 1, "malformed": 3, "unknown_duration": 1}
    assert "nan is not a string" in reason_of(rejected, "NaN")
    assert "1 start, 2 end, 1 text" in reason_of(rejected, "h3")
    assert "no durations CSV" in reason_of(rejected, "h4")
    assert stats.videos == 2 and stats.captions == 3

    durations = write(tmp_path / "d.csv", "id,duration\nh1,8.0\nh4,60\n")
    videos, rejected, stats = read_all("howto100m", path, split="train", durations=durations, language="hi")
    assert videos["h1"].duration == 8.0 and videos["h1"].captions[1] == Caption(4.2, 8.0, "second")
    assert videos["h4"].captions == () and videos["h4"].duration == 60.0 and videos["h4"].language == "hi"
    assert kinds(rejected) == {
        "end_before_start": 1,
        "malformed": 3,  # h2's nan text, h3, h5
        "unknown_duration": 1,  # h2's first caption
        "all_captions_rejected": 1,  # h2
    }
    assert stats.clamped == 1
