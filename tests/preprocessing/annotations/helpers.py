"""Helpers of the annotation reader tests: read a whole file, group refusals by kind, write inputs."""

import collections
import json

from preprocessing.annotations import ReadStats, read_annotations
from preprocessing.records import Rejected, VideoAnnotation


def read_all(fmt, path, **kwargs):
    """Reads everything; returns (videos by id, rejected list, stats)."""
    stats = ReadStats()
    items = list(read_annotations(fmt, str(path), stats=stats, **kwargs))
    videos = [i for i in items if isinstance(i, VideoAnnotation)]
    rejected = [i for i in items if isinstance(i, Rejected)]
    assert len(videos) + len(rejected) == len(items)
    by_id = {v.video_id: v for v in videos}
    assert len(by_id) == len(videos), "a video id was emitted twice"
    return by_id, rejected, stats


def kinds(rejected):
    """Counts of the refusals by reason kind."""
    return collections.Counter(r.reason.split(":", 1)[0] for r in rejected)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def write_json(path, obj):
    return write(path, json.dumps(obj))


def reason_of(rejected, needle):
    """The one reason whose input contains `needle`."""
    found = [r.reason for r in rejected if needle in r.input]
    assert len(found) == 1, (needle, found)
    return found[0]
