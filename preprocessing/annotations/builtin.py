"""The built-in corpus written by `python -m corpus.synthetic`: a directory of annotations.json and splits.json.

`<corpus>/annotations.json` is ActivityNet Captions JSON
(preprocessing.annotations.activitynet) whose entries may also carry
`language` (str), `sentences_en` (an English caption per step, filling
Caption.text_en) and `audio_dependent` (0 or 1 per step); absent, they default
to the reader's `language`, '' and -1. The per-step `steps` key is not carried
into the record. `<corpus>/splits.json` is `{split: [ids]}` with splits from
records.SPLITS; each video must be in exactly one. The media of video `<id>`
is `<corpus>/videos/<id>.mp4`.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterator, Optional

from preprocessing.annotations.activitynet import entry_captions
from preprocessing.annotations.entries import entry_video, unique_entries
from preprocessing.annotations.files import expect_object, load_json_file, require_file
from preprocessing.annotations.paths import exists, join
from preprocessing.annotations.registry import Head, register_format
from preprocessing.annotations.validation import (
    DEFAULT_MAX_OVERSHOOT,
    Context,
    Invalid,
    Item,
    ReadStats,
    check_common,
    clean_text,
    require_keys,
    require_list,
)
from preprocessing.records import SPLITS


def _looks_like(head: Head) -> bool:
    return head.is_dir and exists(join(head.path, "annotations.json"), want_dir=False)


@register_format("builtin", looks_like=_looks_like)
def read_builtin(
    path: str,
    *,
    language: str = "",
    source: str = "builtin",
    max_overshoot: float = DEFAULT_MAX_OVERSHOOT,
    stats: Optional[ReadStats] = None,
) -> Iterator[Item]:
    """Reads the built-in corpus in directory `path`.

    media_path is `videos/<id>.mp4`, relative to the corpus dir, so pass the
    corpus dir as the videos dir to resolve_media_path.

    Args:
      path: the corpus directory.
      language: language code for videos whose entry has no `language`.
      source: name recorded in VideoAnnotation.source.
      max_overshoot: seconds an end may pass the duration and be clamped.
      stats: filled with the read's counts if given.

    Returns:
      A lazy iterator of VideoAnnotation and Rejected, in annotations.json
      order, then refusals of splits.json ids that annotations.json lacks.

    Raises:
      FileNotFoundError: if the directory, annotations.json or splits.json is
        missing.
      ValueError: on a bad argument, or (when iterated) a splits.json that is
        not `{split: [ids]}` with known splits.
    """
    check_common(language, source, max_overshoot)
    if not isinstance(path, str) or not exists(path, want_dir=True):
        raise FileNotFoundError(f"Built-in corpus directory {path!r}: no such directory.")
    annotations_path, splits_path = join(path, "annotations.json"), join(path, "splits.json")
    require_file(annotations_path, "Built-in corpus annotations")
    require_file(splits_path, "Built-in corpus splits")
    return _read(Context(annotations_path, source, max_overshoot, stats), splits_path, language)


@dataclasses.dataclass(frozen=True)
class _Extras:
    """Per-step extras of an entry, checked at the entry level."""

    text_en: list
    audio_dependent: list


def _read_splits(path: str) -> dict[str, list[str]]:
    splits = expect_object(load_json_file(path), "the top level", path)
    for name, ids in splits.items():
        if name not in SPLITS:
            raise ValueError(f"{path}: split {name!r} is not one of {list(SPLITS)}.")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"{path}: split {name!r} must be a list of video id strings, got {ids!r:.200}.")
    return splits


def _extras(entry: dict, n: int) -> _Extras:
    text_en = entry.get("sentences_en", [""] * n)
    audio_dependent = entry.get("audio_dependent", [-1] * n)
    if not isinstance(text_en, list) or len(text_en) != n:
        raise Invalid("malformed", f"'sentences_en' must be a list of {n} strings, got {text_en!r:.200}")
    if not isinstance(audio_dependent, list) or len(audio_dependent) != n:
        raise Invalid(
            "malformed", f"'audio_dependent' must be a list of {n} values 0 or 1, got {audio_dependent!r:.200}"
        )
    for i, value in enumerate(audio_dependent):
        if type(value) is not int or value not in (0, 1, -1):
            raise Invalid("malformed", f"audio_dependent[{i}] = {value!r}; valid: 0, 1 (or -1, unknown)")
    return _Extras(
        text_en=[clean_text(t, f"sentences_en[{i}]") for i, t in enumerate(text_en)],
        audio_dependent=list(audio_dependent),
    )


def _read(ctx: Context, splits_path: str, default_language: str) -> Iterator[Item]:
    splits = _read_splits(splits_path)
    membership: dict[str, list[str]] = collections.defaultdict(list)
    for name, ids in splits.items():
        for video_id in ids:
            membership[video_id].append(name)
    data = expect_object(load_json_file(ctx.path), "the top level", ctx.path)
    for video_id, entry, refusal in unique_entries(ctx, data, ctx.path):
        if refusal is not None:
            yield refusal
            continue
        where = ctx.video_where(video_id)
        try:
            names = membership.get(video_id, [])
            if len(names) != 1:
                listed = f"listed under {names}" if names else "in no split"
                raise Invalid("bad_split", f"video {video_id!r} is {listed} in {splits_path}; it needs exactly one")
            language = entry.get("language", default_language)
            if not isinstance(language, str):
                raise Invalid("malformed", f"'language' {language!r} is not a string")
            require_keys(entry, ("sentences",))
            extras = _extras(entry, len(require_list(entry, "sentences")))
            duration, raw_captions = entry_captions(ctx, video_id, entry, extras.text_en, extras.audio_dependent)
        except Invalid as e:
            yield ctx.reject_invalid(video_id, e, where)
            continue
        yield from entry_video(
            ctx, video_id, duration, raw_captions, names[0], language, media_path=f"videos/{video_id}.mp4"
        )
    for video_id, names in membership.items():
        if video_id not in data:
            yield ctx.reject(
                video_id,
                "missing_annotation",
                f"video {video_id!r} is listed under {names} in {splits_path} but has no entry",
                ctx.path,
            )
    ctx.log_summary()
