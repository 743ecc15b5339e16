"""HowTo100M ASR captions: JSON `{vid: {start: [...], end: [...], text: [...]}}`, optionally with a durations CSV.

E.g. `{"<vid>": {"start": [0.0, 4.2], "end": [4.0, 8.5], "text": ["first
segment", "second segment"]}}`: the three lists are parallel, one ASR segment
each. A video's duration comes from the durations CSV when one is given (a
video missing from it has its captions refused); without a CSV it is the last
end time among the video's valid captions, a lower bound of the true duration.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Optional, Union

from preprocessing.annotations.entries import entry_video, unique_entries
from preprocessing.annotations.files import expect_object, load_json_file, read_durations, require_file
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
    check_split,
    clean_text,
    json_time,
    require_keys,
    require_list,
)
from preprocessing.records import Caption


def _looks_like(head: Head) -> bool:
    return head.text.startswith("{") and {"start", "end", "text"} <= head.keys


@register_format("howto100m", looks_like=_looks_like)
def read_howto100m(
    path: str,
    *,
    split: str,
    durations: Optional[str] = None,
    language: str = "en",
    source: str = "howto100m",
    max_overshoot: float = DEFAULT_MAX_OVERSHOOT,
    stats: Optional[ReadStats] = None,
) -> Iterator[Item]:
    """Reads HowTo100M-style ASR captions `{vid: {start: [...], end: [...], text: [...]}}`.

    Args:
      path: the captions JSON file.
      split: the split of every video, one of records.SPLITS.
      durations: optional CSV with columns `id` and `length` (or `duration`).
      language: language code of the videos' speech.
      source: name recorded in VideoAnnotation.source.
      max_overshoot: seconds an end may pass the duration and be clamped.
      stats: filled with the read's counts if given.

    Returns:
      A lazy iterator of VideoAnnotation and Rejected, in file order.

    Raises:
      FileNotFoundError: if `path` or a given `durations` does not exist.
      ValueError: on a bad argument, or (when iterated) a file that is not a
        JSON object or a durations CSV without the needed columns.
    """
    check_split(split)
    check_common(language, source, max_overshoot)
    require_file(path, "HowTo100M captions")
    if durations is not None:
        require_file(durations, "Durations CSV")
    return _read(Context(path, source, max_overshoot, stats), durations, split, language)


def _read(ctx: Context, durations_path: Optional[str], split: str, language: str) -> Iterator[Item]:
    durations = read_durations(durations_path) if durations_path is not None else None
    data = expect_object(load_json_file(ctx.path), "the top level", ctx.path)
    for video_id, entry, refusal in unique_entries(ctx, data, ctx.path):
        if refusal is not None:
            yield refusal
            continue
        try:
            require_keys(entry, ("start", "end", "text"))
            starts, ends, texts = (require_list(entry, k) for k in ("start", "end", "text"))
            if not len(starts) == len(ends) == len(texts):
                raise Invalid(
                    "malformed",
                    f"parallel lists differ in length: {len(starts)} start, {len(ends)} end, {len(texts)} text",
                )
        except Invalid as e:
            yield ctx.reject_invalid(video_id, e, ctx.video_where(video_id))
            continue
        duration: Union[float, Invalid, None] = None
        if durations is not None:
            duration = durations.get(video_id)
            if duration is None:
                duration = Invalid("unknown_duration", f"video {video_id!r} is not in durations CSV {durations_path}")
        # Without a CSV the duration is the last valid end, so no caption can pass it.
        limit = math.inf if duration is None else duration

        def build(start: Any, end: Any, text: Any, limit: Union[float, Invalid] = limit) -> Caption:
            start, end = json_time(start, "start"), json_time(end, "end")
            return check_caption(ctx, start, end, clean_text(text, "text"), limit)

        raw = [
            (
                as_json({"video_id": video_id, "start": s, "end": e, "text": t}),
                lambda s=s, e=e, t=t: build(s, e, t),
            )
            for s, e, t in zip(starts, ends, texts)
        ]
        if isinstance(duration, Invalid) and not raw:
            yield ctx.reject_invalid(video_id, duration, ctx.video_where(video_id))
            continue
        yield from entry_video(ctx, video_id, duration, raw, split, language)
    ctx.log_summary()
