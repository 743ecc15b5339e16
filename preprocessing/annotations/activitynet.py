"""ActivityNet Captions: JSON `{vid: {duration, timestamps, sentences}}`, one entry per video.

E.g. `{"v_uqiMw7tQ1Cc": {"duration": 55.15, "timestamps": [[0.28, 55.15],
[13.79, 54.32]], "sentences": ["A weight lifting tutorial is given.", ...]}}`:
`timestamps` and `sentences` are parallel lists, a `[start, end]` pair of JSON
numbers and a sentence per caption. The built-in corpus extends this entry
(preprocessing.annotations.builtin), so its parsing is shared from here.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional

from preprocessing.annotations.entries import entry_video, unique_entries
from preprocessing.annotations.files import expect_object, load_json_file, require_file
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
    require_list,
    span,
)
from preprocessing.records import Caption


def _looks_like(head: Head) -> bool:
    return head.text.startswith("{") and {"timestamps", "sentences"} <= head.keys


@register_format("activitynet", looks_like=_looks_like)
def read_activitynet(
    path: str,
    *,
    split: str,
    language: str = "en",
    source: str = "activitynet",
    max_overshoot: float = DEFAULT_MAX_OVERSHOOT,
    stats: Optional[ReadStats] = None,
) -> Iterator[Item]:
    """Reads ActivityNet Captions JSON `{vid: {duration, timestamps, sentences}}`.

    Args:
      path: the JSON file (e.g. val_1.json).
      split: the split of every video, one of records.SPLITS.
      language: language code of the videos' speech.
      source: name recorded in VideoAnnotation.source.
      max_overshoot: seconds an end may pass the duration and be clamped.
      stats: filled with the read's counts if given.

    Returns:
      A lazy iterator of VideoAnnotation and Rejected, in file order.

    Raises:
      FileNotFoundError: if `path` does not exist.
      ValueError: on a bad argument, or (when iterated) a file that is not a
        JSON object.
    """
    check_split(split)
    check_common(language, source, max_overshoot)
    require_file(path, "ActivityNet Captions annotations")
    return _read(Context(path, source, max_overshoot, stats), split, language)


def _read(ctx: Context, split: str, language: str) -> Iterator[Item]:
    data = expect_object(load_json_file(ctx.path), "the top level", ctx.path)
    for video_id, entry, refusal in unique_entries(ctx, data, ctx.path):
        if refusal is not None:
            yield refusal
            continue
        try:
            duration, raw_captions = entry_captions(ctx, video_id, entry)
        except Invalid as e:
            yield ctx.reject_invalid(video_id, e, ctx.video_where(video_id))
            continue
        yield from entry_video(ctx, video_id, duration, raw_captions, split, language)
    ctx.log_summary()


def entry_captions(
    ctx: Context,
    video_id: str,
    entry: dict,
    text_en: Optional[list[str]] = None,
    audio_dependent: Optional[list[int]] = None,
) -> tuple[float, list[tuple[str, Callable[[], Caption]]]]:
    """Checks an entry's structure and prepares its captions, to be built by entry_video.

    Args:
      ctx: the read.
      video_id: the entry's id.
      entry: the entry's JSON object.
      text_en: the built-in corpus's English caption per sentence, already
        checked to be as long as `sentences`; None for ''.
      audio_dependent: likewise its 0/1 flag per sentence; None for -1.

    Returns:
      (duration, [(input shown in a refusal, thunk that checks and builds the Caption)]).

    Raises:
      Invalid: the entry's structure or duration is wrong.
    """
    require_keys(entry, ("duration", "timestamps", "sentences"))
    duration = check_duration(entry["duration"], f"video {video_id!r}")
    timestamps = require_list(entry, "timestamps")
    sentences = require_list(entry, "sentences")
    if len(timestamps) != len(sentences):
        raise Invalid("malformed", f"{len(timestamps)} timestamps but {len(sentences)} sentences")

    def build(i: int) -> Caption:
        start, end = span(timestamps[i], "timestamp")
        start, end = json_time(start, "start"), json_time(end, "end")
        text = clean_text(sentences[i], "sentence")
        return check_caption(
            ctx,
            start,
            end,
            text,
            duration,
            text_en[i] if text_en is not None else "",
            audio_dependent[i] if audio_dependent is not None else -1,
        )

    raw = []
    for i, (timestamp, sentence) in enumerate(zip(timestamps, sentences)):
        input_ = as_json({"video_id": video_id, "timestamp": timestamp, "sentence": sentence})
        raw.append((input_, lambda i=i: build(i)))
    return duration, raw
