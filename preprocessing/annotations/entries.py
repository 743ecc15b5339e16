"""Checked captions into records: a video per line group or JSON entry, or the Rejected that refuses it."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Iterator, Optional, Union

from preprocessing.annotations.files import json_entries
from preprocessing.annotations.validation import Context, Invalid, Item, as_json
from preprocessing.records import Caption, Rejected, VideoAnnotation


@dataclasses.dataclass
class Group:
    """Captions of one video gathered over several lines (line formats).

    Attributes:
      where: the line that first named the video.
      duration: seconds; the reason it is unusable; None until a line sets it.
      captions: the captions kept so far.
      seen: captions the input gave the video, kept or refused.
    """

    where: str
    duration: Union[float, Invalid, None] = None
    captions: list = dataclasses.field(default_factory=list)
    seen: int = 0


def emit_groups(ctx: Context, groups: dict[str, Group], split: str, language: str) -> Iterator[Item]:
    """Yields each group's video, or its refusal when every caption it had was refused."""
    for video_id, group in groups.items():
        if not group.captions:
            yield ctx.reject(
                video_id,
                "all_captions_rejected",
                f"all {group.seen} captions of video {video_id!r} were rejected",
                group.where,
            )
            continue
        yield ctx.video(
            VideoAnnotation(
                video_id=video_id,
                duration=group.duration,
                captions=tuple(group.captions),
                split=split,
                language=language,
                source=ctx.source,
            )
        )


def entry_video(
    ctx: Context,
    video_id: str,
    duration: Union[float, Invalid, None],
    raw_captions: list[tuple[str, Callable[[], Caption]]],
    split: str,
    language: str,
    media_path: Optional[str] = None,
) -> Iterator[Item]:
    """Checks one JSON entry's captions; yields their refusals, then the video or its refusal.

    Args:
      ctx: the read.
      video_id: the entry's id.
      duration: seconds; None means the longest valid caption end (a lower bound).
      raw_captions: (input shown in a refusal, thunk that checks and builds the Caption).
      split: the video's split.
      language: the video's language.
      media_path: the video's media path relative to the videos dir, if known.
    """
    where = ctx.video_where(video_id)
    captions = []
    for input_, build in raw_captions:
        try:
            captions.append(build())
        except Invalid as e:
            yield ctx.reject_invalid(input_, e, where)
    if raw_captions and not captions:
        yield ctx.reject(
            video_id,
            "all_captions_rejected",
            f"all {len(raw_captions)} captions of video {video_id!r} were rejected",
            where,
        )
        return
    if duration is None:
        if not captions:
            yield ctx.reject(
                video_id, "unknown_duration", "no durations CSV and no caption to take the last end time from", where
            )
            return
        duration = max(c.end for c in captions)
    yield ctx.video(
        VideoAnnotation(
            video_id=video_id,
            duration=duration,
            captions=tuple(captions),
            split=split,
            language=language,
            source=ctx.source,
            media_path=media_path,
        )
    )


def unique_entries(ctx: Context, obj: dict, what: str) -> Iterator[tuple[str, Any, Optional[Rejected]]]:
    """Yields (video id, entry, None) for each id that occurs once, (id, entry, Rejected) otherwise."""
    entries = json_entries(obj)
    counts = collections.Counter(key for key, _ in entries)
    for video_id, entry in entries:
        if counts[video_id] > 1:
            message = (
                f"video id {video_id!r} occurs {counts[video_id]} times in {what}; which entry is right is ambiguous"
            )
            yield video_id, entry, ctx.reject(video_id, "duplicate_id", message, ctx.video_where(video_id))
        elif not video_id.strip():
            yield video_id, entry, ctx.reject(as_json(video_id), "malformed", "empty video id", ctx.path)
        elif not isinstance(entry, dict):
            message = f"entry is a {type(entry).__name__}, not a JSON object"
            yield video_id, entry, ctx.reject(video_id, "malformed", message, ctx.video_where(video_id))
        else:
            yield video_id, entry, None
