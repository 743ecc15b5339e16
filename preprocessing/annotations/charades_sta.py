"""Charades-STA: text lines `vid start end##sentence`, with the videos' lengths in a durations CSV.

The file holds one caption a line, e.g. `3MSZA 24.3 30.4##person turn a light
on.`: the video id, start and end in seconds, then `##` and the sentence. A
video's captions may be spread over many lines. Durations come from a CSV with
columns `id` and `length` (or `duration`), like the official
Charades_v1_test.csv; a video missing from it has its captions refused
(unknown_duration).
"""

from __future__ import annotations

import re
from typing import Iterator, Optional

from preprocessing.annotations.entries import Group, emit_groups
from preprocessing.annotations.files import read_durations, read_lines, require_file
from preprocessing.annotations.registry import Head, register_format
from preprocessing.annotations.validation import (
    DEFAULT_MAX_OVERSHOOT,
    Context,
    Invalid,
    Item,
    ReadStats,
    check_caption,
    check_common,
    check_split,
    clean_text,
    parse_time,
)

_LINE = re.compile(r"\S+\s+\S+\s+\S+\s*##")


def _looks_like(head: Head) -> bool:
    return not head.text.startswith("{") and bool(_LINE.match(head.first_line))


@register_format("charades_sta", looks_like=_looks_like)
def read_charades_sta(
    path: str,
    *,
    durations: str,
    split: str,
    language: str = "en",
    source: str = "charades_sta",
    max_overshoot: float = DEFAULT_MAX_OVERSHOOT,
    stats: Optional[ReadStats] = None,
) -> Iterator[Item]:
    """Reads Charades-STA `vid start end##sentence` lines, grouped into one record per video.

    Line refusals are yielded as they are read; videos (and video refusals) follow
    once the whole file is read, in order of first appearance.

    Args:
      path: the Charades-STA text file.
      durations: CSV with columns `id` and `length` (or `duration`), e.g. the
        official Charades_v1_test.csv.
      split: the split of every video, one of records.SPLITS.
      language: language code of the videos' speech.
      source: name recorded in VideoAnnotation.source.
      max_overshoot: seconds an end may pass the duration and be clamped.
      stats: filled with the read's counts if given.

    Returns:
      A lazy iterator of VideoAnnotation and Rejected.

    Raises:
      FileNotFoundError: if `path` or `durations` does not exist.
      ValueError: on a bad argument, or (when iterated) a durations CSV
        without the needed columns.
    """
    check_split(split)
    check_common(language, source, max_overshoot)
    require_file(path, "Charades-STA annotations")
    require_file(durations, "Durations CSV")
    return _read(Context(path, source, max_overshoot, stats), durations, split, language)


def _split_line(line: Optional[str]) -> tuple[list[str], str]:
    """The line's `vid start end` fields and its sentence; Invalid if it has not that shape."""
    if line is None:
        raise Invalid("malformed", "line is not UTF-8")
    if not line.strip():
        raise Invalid("malformed", "blank line")
    if line.count("##") != 1:
        raise Invalid(
            "malformed", f"expected one '##' between 'vid start end' and the sentence, found {line.count('##')}"
        )
    head, sentence = line.split("##")
    fields = head.split()
    if len(fields) != 3:
        raise Invalid("malformed", f"expected 'vid start end' before '##', got {len(fields)} fields {fields}")
    return fields, sentence


def _read(ctx: Context, durations_path: str, split: str, language: str) -> Iterator[Item]:
    durations = read_durations(durations_path)
    groups: dict[str, Group] = {}
    for lineno, line, raw in read_lines(ctx.path):
        where = ctx.line_where(lineno)
        try:
            (video_id, start_text, end_text), sentence = _split_line(line)
        except Invalid as e:
            yield ctx.reject_invalid(line if line is not None else repr(raw), e, where)
            continue
        group = groups.get(video_id)
        if group is None:
            duration = durations.get(video_id)
            if duration is None:
                duration = Invalid("unknown_duration", f"video {video_id!r} is not in durations CSV {durations_path}")
            group = groups[video_id] = Group(where=where, duration=duration)
        group.seen += 1
        try:
            start = parse_time(start_text, "start")
            end = parse_time(end_text, "end")
            caption = check_caption(ctx, start, end, clean_text(sentence, "sentence"), group.duration)
        except Invalid as e:
            yield ctx.reject_invalid(line, e, where)
            continue
        group.captions.append(caption)
    yield from emit_groups(ctx, groups, split, language)
    ctx.log_summary()
