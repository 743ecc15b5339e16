"""YouCook2: JSON `{"database": {vid: {duration, subset, annotations}}}`, each video carrying its own split.

E.g. `{"database": {"<vid>": {"duration": 100.0, "subset": "training",
"recipe_type": "113", "annotations": [{"segment": [10, 20], "id": 0,
"sentence": "spread margarine on bread"}, ...]}}}`. Each
video's `subset` gives its split (training/validation/testing ->
train/val/test); each annotation `{"segment": [s, e], "sentence": ...}` is a
caption. Other keys are ignored.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

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
    clean_text,
    json_time,
    require_keys,
    require_list,
    span,
)
from preprocessing.records import Caption

SUBSETS = {"training": "train", "validation": "val", "testing": "test"}


def _looks_like(head: Head) -> bool:
    return head.text.startswith("{") and "database" in head.keys


@register_format("youcook2", looks_like=_looks_like)
def read_youcook2(
    path: str,
    *,
    language: str = "en",
    source: str = "youcook2",
    max_overshoot: float = DEFAULT_MAX_OVERSHOOT,
    stats: Optional[ReadStats] = None,
) -> Iterator[Item]:
    """Reads YouCook2 JSON `{"database": {vid: {duration, subset, annotations}}}`.

    Args:
      path: the JSON file (e.g. youcookii_annotations_trainval.json).
      language: language code of the videos' speech.
      source: name recorded in VideoAnnotation.source.
      max_overshoot: seconds an end may pass the duration and be clamped.
      stats: filled with the read's counts if given.

    Returns:
      A lazy iterator of VideoAnnotation and Rejected, in file order.

    Raises:
      FileNotFoundError: if `path` does not exist.
      ValueError: on a bad argument, or (when iterated) a file without a
        `database` object.
    """
    check_common(language, source, max_overshoot)
    require_file(path, "YouCook2 annotations")
    return _read(Context(path, source, max_overshoot, stats), language)


def _read(ctx: Context, language: str) -> Iterator[Item]:
    data = expect_object(load_json_file(ctx.path), "the top level", ctx.path)
    if "database" not in data:
        raise ValueError(f"{ctx.path}: YouCook2 JSON needs a top-level 'database' key, found {sorted(data)[:10]}.")
    database = expect_object(data["database"], "'database'", ctx.path)
    for video_id, entry, refusal in unique_entries(ctx, database, f"{ctx.path} 'database'"):
        if refusal is not None:
            yield refusal
            continue
        try:
            require_keys(entry, ("duration", "subset", "annotations"))
            subset = entry["subset"]
            if not isinstance(subset, str) or subset not in SUBSETS:
                raise Invalid("bad_split", f"subset {subset!r} is not one of {list(SUBSETS)}")
            duration = check_duration(entry["duration"], f"video {video_id!r}")
            annotations = require_list(entry, "annotations")
        except Invalid as e:
            yield ctx.reject_invalid(video_id, e, ctx.video_where(video_id))
            continue

        def build(annotation: Any, duration: float = duration) -> Caption:
            if not isinstance(annotation, dict) or "segment" not in annotation or "sentence" not in annotation:
                raise Invalid("malformed", "annotation is not an object with 'segment' and 'sentence'")
            start, end = span(annotation["segment"], "segment")
            start, end = json_time(start, "start"), json_time(end, "end")
            return check_caption(ctx, start, end, clean_text(annotation["sentence"], "sentence"), duration)

        raw = [(as_json({"video_id": video_id, "annotation": a}), lambda a=a: build(a)) for a in annotations]
        yield from entry_video(ctx, video_id, duration, raw, SUBSETS[subset], language)
    ctx.log_summary()
