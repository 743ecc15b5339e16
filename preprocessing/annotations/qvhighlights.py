"""QVHighlights: jsonl, one query a line, `{qid, query, duration, vid, relevant_windows}`.

E.g. `{"qid": 1, "query": "a man rides a bike", "duration": 150, "vid":
"<vid>_60.0_210.0", "relevant_windows": [[0, 4], [20, 30]]}`: each relevant
window `[start, end]` becomes a caption with the query as its text, and the
captions are grouped by `vid`. Other keys (saliency scores, clip ids) are
ignored. A query without windows (the test split's) is refused: a caption needs
a time span.
"""

from __future__ import annotations

import collections
import json
from typing import Iterator, Optional

from preprocessing.annotations.entries import Group, emit_groups
from preprocessing.annotations.files import read_lines, require_file
from preprocessing.annotations.registry import Head, register_format
from preprocessing.annotations.validation import (
    DEFAULT_MAX_OVERSHOOT,
    Context,
    Invalid,
    Item,
    ReadStats,
    as_json,
    check_caption,
    check_common,
    check_duration,
    check_split,
    clean_text,
    json_time,
    require_keys,
    span,
)


def _looks_like(head: Head) -> bool:
    return isinstance(head.first_json, dict) and ("qid" in head.first_json or "relevant_windows" in head.first_json)


@register_format("qvhighlights", looks_like=_looks_like)
def read_qvhighlights(
    path: str,
    *,
    split: str,
    language: str = "en",
    source: str = "qvhighlights",
    max_overshoot: float = DEFAULT_MAX_OVERSHOOT,
    stats: Optional[ReadStats] = None,
) -> Iterator[Item]:
    """Reads QVHighlights-style jsonl: one query a line, a caption per relevant window.

    The first accepted line of a video sets its duration; a later line that
    disagrees is refused. Line refusals are yielded as they are found; videos
    follow, in order of first appearance.

    Args:
      path: the jsonl file.
      split: the split of every video, one of records.SPLITS.
      language: language code of the videos' speech.
      source: name recorded in VideoAnnotation.source.
      max_overshoot: seconds an end may pass the duration and be clamped.
      stats: filled with the read's counts if given.

    Returns:
      A lazy iterator of VideoAnnotation and Rejected.

    Raises:
      FileNotFoundError: if `path` does not exist.
      ValueError: on a bad argument.
    """
    check_split(split)
    check_common(language, source, max_overshoot)
    require_file(path, "QVHighlights annotations")
    return _read(Context(path, source, max_overshoot, stats), split, language)


def _parse_line(line: Optional[str]) -> dict:
    """The line's query object, its structure checked; Invalid otherwise."""
    if line is None:
        raise Invalid("malformed", "line is not UTF-8")
    if not line.strip():
        raise Invalid("malformed", "blank line")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise Invalid("malformed", f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise Invalid("malformed", f"line is a JSON {type(obj).__name__}, not an object")
    require_keys(obj, ("qid", "query", "duration", "vid"))
    if not isinstance(obj["vid"], str) or not obj["vid"].strip():
        raise Invalid("malformed", f"vid {obj['vid']!r} is not a non-empty string")
    qid = obj["qid"]
    if isinstance(qid, bool) or not isinstance(qid, (int, str)):
        raise Invalid("malformed", f"qid {qid!r} is not an integer or string")
    windows = obj.get("relevant_windows")
    if windows is None or windows == []:
        raise Invalid("no_windows", f"query {qid!r} has no relevant_windows; a caption needs a time span")
    if not isinstance(windows, list):
        raise Invalid("malformed", f"relevant_windows {windows!r:.200} is not a list")
    return obj


def _read(ctx: Context, split: str, language: str) -> Iterator[Item]:
    # Every line is parsed before any is grouped: a duplicated qid refuses all its lines, the first one too.
    parsed = []
    for lineno, line, raw in read_lines(ctx.path):
        try:
            parsed.append((lineno, line, _parse_line(line)))
        except Invalid as e:
            yield ctx.reject_invalid(line if line is not None else repr(raw), e, ctx.line_where(lineno))
    qid_lines = collections.defaultdict(list)
    for lineno, _, obj in parsed:
        qid_lines[obj["qid"]].append(lineno)
    groups: dict[str, Group] = {}
    for lineno, line, obj in parsed:
        where = ctx.line_where(lineno)
        qid, video_id = obj["qid"], obj["vid"]
        group = groups.setdefault(video_id, Group(where=where))
        group.seen += len(obj["relevant_windows"])
        try:
            if len(qid_lines[qid]) > 1:
                raise Invalid(
                    "duplicate_id", f"qid {qid!r} occurs on lines {qid_lines[qid]}; which is right is ambiguous"
                )
            duration = check_duration(obj["duration"], f"video {video_id!r}")
            if group.duration is not None and group.duration != duration:
                raise Invalid(
                    "conflicting_duration",
                    f"duration {duration!r} of video {video_id!r} disagrees with {group.duration!r} set earlier",
                )
        except Invalid as e:
            yield ctx.reject_invalid(line, e, where)
            continue
        group.duration = duration
        for window in obj["relevant_windows"]:
            try:
                start, end = span(window, "window")
                start, end = json_time(start, "start"), json_time(end, "end")
                group.captions.append(check_caption(ctx, start, end, clean_text(obj["query"], "query"), duration))
            except Invalid as e:
                input_ = as_json({"qid": qid, "vid": video_id, "window": window, "query": obj["query"]})
                yield ctx.reject_invalid(input_, e, where)
    yield from emit_groups(ctx, groups, split, language)
    ctx.log_summary()
