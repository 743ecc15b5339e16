"""Annotation readers: every supported format -> VideoAnnotation records and Rejected dead letters.

Formats (the keys of READERS):

  charades_sta   lines `vid start end##sentence` plus a durations CSV (columns
                 `id` and `length` or `duration`, like the official Charades_v1 CSVs).
  activitynet    ActivityNet Captions JSON `{vid: {duration, timestamps, sentences}}`.
  youcook2       YouCook2 JSON `{"database": {vid: {duration, subset, annotations}}}`.
  qvhighlights   jsonl, one query a line: `qid, query, duration, vid, relevant_windows`.
  howto100m      ASR captions JSON `{vid: {start: [...], end: [...], text: [...]}}`.
  builtin        the corpus written by `python -m corpus.synthetic`.

Every reader returns a lazy iterator of `VideoAnnotation | Rejected`. Each input
line (line formats) or caption (JSON formats) is either read into a Caption or
refused with exactly one Rejected; an entry that cannot be read at all (a
malformed video entry, a duplicated id) is refused with one Rejected naming the
video. A video that had captions in the input but kept none is also refused, with
one more Rejected naming the video. A video whose input lists no captions at all
(e.g. an empty `timestamps` list) is emitted with `captions=()`: it is unlabeled,
not broken, and retrieval training can use it.

Validation policy. Structure is checked first, then the caption's own fields
(times, then text), then the caption against its video's duration; the first
failing rule gives the reason:

  malformed            structure is wrong: a line without exactly one `##` or
                       without exactly three fields before it, invalid JSON,
                       a missing key, a wrong type, parallel lists of different
                       lengths, a blank line, bytes that are not UTF-8.
  bad_time             start or end is not a finite number (text formats parse
                       numbers from text; JSON formats need JSON numbers).
  empty_text           the caption is empty or whitespace-only.
  negative_start       start < 0.
  end_before_start     end < start.
  zero_length          end == start.
  unknown_duration     the video is missing from the durations CSV.
  bad_duration         the video's duration is not a finite number > 0.
  conflicting_duration the same video is given two different durations.
  start_past_duration  start >= duration.
  end_past_duration    end > duration + max_overshoot.
  duplicate_id         a video id (JSON key) or QVHighlights qid occurs more
                       than once; which occurrence is right is ambiguous, so all
                       of them are refused.
  no_windows           a QVHighlights query with no relevant window (e.g. its
                       test split): a caption needs a time span.
  bad_split            a YouCook2 subset or built-in splits.json entry that
                       maps to no split in records.SPLITS.
  missing_annotation   a built-in splits.json id that annotations.json lacks.
  all_captions_rejected  the video-level refusal described above.

An end up to `max_overshoot` seconds (default 2.0) past the duration is clamped
to the duration: real annotations do this routinely. In the Charades-STA test
queries 562 of 3720 ends pass the video's length, by up to 1.5 s; in ActivityNet
Captions val_1 134 of 17505 do, 5 by 0.01 s and 129 only because the file stores
durations such as 95.03999999999999 next to ends of 95.04. The number of clamped
captions is kept in ReadStats.clamped and logged when the read finishes.

Whole-file problems are errors, not dead letters, because nothing in such a file
can be read and the format or path given is what is wrong: a missing file raises
FileNotFoundError when the reader is called; a file that is not JSON, not the
expected JSON object, or a durations CSV without its columns raises ValueError
when the iterator is first advanced.

A job checks its file with check_annotations before it starts: that reads up
to the first video and raises ValueError when the file gives none (the wrong
format, or a file whose every entry is refused), naming the file, the format,
the first reasons and, from guess_format, the format the file looks like.

Rejected.reason is `<kind>: <what is wrong, naming the value> (<where>)`, so
the dead letter can be grouped by kind; ReadStats.rejected counts the same kinds.
Caption text has its whitespace normalized (stripped, runs collapsed to one
space). Captions keep their input order; files may live on any tf.io.gfile file
system (gs://...), with TensorFlow imported only for such paths.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import inspect
import io
import json
import logging
import math
import os
import posixpath
import re
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from preprocessing.records import SPLITS, Caption, Rejected, VideoAnnotation

STAGE = "ReadAnnotations"
DEFAULT_MAX_OVERSHOOT = 2.0
MEDIA_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".wav", ".flac", ".mp3", ".ogg")
REJECT_KINDS = (
    "malformed",
    "bad_time",
    "empty_text",
    "negative_start",
    "end_before_start",
    "zero_length",
    "unknown_duration",
    "bad_duration",
    "conflicting_duration",
    "start_past_duration",
    "end_past_duration",
    "duplicate_id",
    "no_windows",
    "bad_split",
    "missing_annotation",
    "all_captions_rejected",
)
YOUCOOK2_SUBSETS = {"training": "train", "validation": "val", "testing": "test"}
DURATION_COLUMNS = ("length", "duration")

Item = Union[VideoAnnotation, Rejected]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# check_annotations quotes this many refusal reasons; guess_format reads this many bytes.
_CHECK_REASONS = 3
_SNIFF_BYTES = 1 << 16


@dataclasses.dataclass
class ReadStats:
    """Counts of one read, filled in as the reader's iterator is consumed.

    Attributes:
      videos: VideoAnnotation records emitted.
      captions: captions in the emitted videos.
      clamped: emitted captions whose end was past the duration (within
        max_overshoot) and was clamped to it.
      rejected: Rejected records emitted, by kind (one of REJECT_KINDS).
      log_rejections: log a warning per refusal (off for the job's pre-flight
        check, whose error already quotes the first refusals).
    """

    videos: int = 0
    captions: int = 0
    clamped: int = 0
    rejected: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    log_rejections: bool = True


class _Invalid(Exception):
    """A refusal: `kind` is one of REJECT_KINDS, `message` names the offending value."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class _Context:
    """What one read shares: where it reads, its settings, its counts."""

    def __init__(self, path: str, source: str, max_overshoot: float, stats: Optional[ReadStats]):
        self.path = path
        self.source = source
        self.max_overshoot = max_overshoot
        self.stats = stats if stats is not None else ReadStats()

    def reject(self, input_: str, kind: str, message: str, where: str) -> Rejected:
        self.stats.rejected[kind] += 1
        if self.stats.log_rejections:
            logging.warning("%s: rejected %s: %s (%s)", self.source, input_, message, where)
        return Rejected(input=input_, stage=STAGE, reason=f"{kind}: {message} ({where})")

    def reject_invalid(self, input_: str, error: _Invalid, where: str) -> Rejected:
        return self.reject(input_, error.kind, error.message, where)

    def video(self, annotation: VideoAnnotation) -> VideoAnnotation:
        self.stats.videos += 1
        self.stats.captions += len(annotation.captions)
        return annotation

    def line_where(self, lineno: int) -> str:
        return f"line {lineno} of {self.path}"

    def video_where(self, video_id: str) -> str:
        return f"video {video_id!r} in {self.path}"

    def log_summary(self) -> None:
        s = self.stats
        logging.info(
            "Read %s from %s: %d videos, %d captions (%d ends clamped to the duration), %d rejected %s",
            self.source,
            self.path,
            s.videos,
            s.captions,
            s.clamped,
            sum(s.rejected.values()),
            dict(sorted(s.rejected.items())),
        )


# ---------------------------------------------------------------- file access


def _is_remote(path: str) -> bool:
    return bool(_SCHEME.match(path))


def _open_binary(path: str):
    if _is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.GFile(path, "rb")
    return open(path, "rb")


def _exists(path: str, want_dir: bool) -> bool:
    if _is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path) and tf.io.gfile.isdir(path) == want_dir
    return os.path.isdir(path) if want_dir else os.path.isfile(path)


def _require_file(path: str, what: str) -> None:
    if not isinstance(path, str) or not path:
        raise ValueError(f"{what}: expected a file path, got {path!r}.")
    if not _exists(path, want_dir=False):
        raise FileNotFoundError(f"{what} {path!r}: no such file.")


def _read_lines(path: str) -> Iterator[tuple[int, Optional[str], bytes]]:
    """Yields (1-based line number, decoded line or None if not UTF-8, raw bytes)."""
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            raw = raw.rstrip(b"\r\n")
            try:
                yield lineno, raw.decode("utf-8"), raw
            except UnicodeDecodeError:
                yield lineno, None, raw


class _JsonObject(dict):
    """A decoded JSON object that keeps its duplicated keys' pairs (json.load drops them)."""

    pairs: Optional[list] = None


def _json_object(pairs: list) -> _JsonObject:
    obj = _JsonObject(pairs)
    if len(obj) != len(pairs):
        obj.pairs = pairs
    return obj


def _load_json_file(path: str) -> Any:
    with _open_binary(path) as f:
        raw = f.read()
    try:
        return json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_json_object)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a UTF-8 JSON file: {e}") from e


def _json_entries(obj: dict) -> list[tuple[str, Any]]:
    """The (key, value) pairs of a JSON object in file order, duplicated keys included."""
    pairs = getattr(obj, "pairs", None)
    return list(pairs) if pairs is not None else list(obj.items())


def _expect_object(value: Any, what: str, path: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{path}: {what} must be a JSON object, got {type(value).__name__}.")
    return value


def _read_durations(path: str) -> dict[str, Union[float, _Invalid]]:
    """Reads a durations CSV into {video id: seconds, or the reason it has none}.

    Raises:
      ValueError: if the header lacks `id` or both `length` and `duration`.
    """
    with _open_binary(path) as f:
        text = f.read().decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []
    column = next((c for c in DURATION_COLUMNS if c in columns), None)
    if "id" not in columns or column is None:
        raise ValueError(
            f"Durations CSV {path} has columns {columns}; it needs 'id' and one of {list(DURATION_COLUMNS)}."
        )
    durations: dict[str, Union[float, _Invalid]] = {}
    no_id = 0
    for row in reader:
        video_id = (row.get("id") or "").strip()
        if not video_id:
            no_id += 1
            continue
        value = (row.get(column) or "").strip()
        where = f"{column} of video {video_id!r} in {path}"
        try:
            seconds: Union[float, _Invalid] = float(value)
        except ValueError:
            seconds = _Invalid("bad_duration", f"duration {value!r} is not a number ({where})")
        else:
            try:
                seconds = _check_duration(seconds, where)
            except _Invalid as e:
                seconds = e
        previous = durations.get(video_id)
        if isinstance(previous, _Invalid):
            continue
        if previous is not None and previous != seconds:
            seconds = _Invalid(
                "conflicting_duration", f"{path} gives video {video_id!r} two durations, {previous!r} and {value!r}"
            )
        durations[video_id] = seconds
    if no_id:
        logging.warning("Durations CSV %s: %d rows without an id were skipped.", path, no_id)
    return durations


# ---------------------------------------------------------------- validation


def _time(value: Any, name: str) -> float:
    """A time from text (a str token) or JSON (a number); finite or _Invalid."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise _Invalid("bad_time", f"{name} {value!r} is not a number") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise _Invalid("bad_time", f"{name} {value!r} is not a number")
    if not math.isfinite(number):
        raise _Invalid("bad_time", f"{name} {value!r} is not finite")
    return number


def _json_time(value: Any, name: str) -> float:
    if isinstance(value, str):
        raise _Invalid("bad_time", f"{name} {value!r} is a string, not a JSON number")
    return _time(value, name)


def _check_duration(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid("bad_duration", f"duration {value!r} is not a number ({what})")
    if not (math.isfinite(value) and value > 0):
        raise _Invalid("bad_duration", f"duration {value!r} is not a finite number > 0 ({what})")
    return float(value)


def _clean_text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _Invalid("malformed", f"{name} {value!r} is not a string")
    return " ".join(value.split())


def _check_caption(
    ctx: _Context,
    start: float,
    end: float,
    text: str,
    duration: Union[float, _Invalid],
    text_en: str = "",
    audio_dependent: int = -1,
) -> Caption:
    """Applies the policy to parsed times and cleaned text; clamps a slight overshoot.

    `duration` is an _Invalid when the video's duration is unknown or bad: the
    caption is then refused for that reason once its own fields pass.
    """
    if not text:
        raise _Invalid("empty_text", "caption text is empty")
    if start < 0:
        raise _Invalid("negative_start", f"start {start!r} < 0")
    if end < start:
        raise _Invalid("end_before_start", f"end {end!r} < start {start!r}")
    if end == start:
        raise _Invalid("zero_length", f"end {end!r} == start {start!r}")
    if isinstance(duration, _Invalid):
        # A fresh exception per caption: re-raising one instance would grow its traceback.
        raise _Invalid(duration.kind, duration.message)
    if start >= duration:
        raise _Invalid("start_past_duration", f"start {start!r} >= duration {duration!r}")
    if end > duration + ctx.max_overshoot:
        raise _Invalid(
            "end_past_duration",
            f"end {end!r} is {end - duration:.3g} s past duration {duration!r}, "
            f"more than max_overshoot {ctx.max_overshoot!r} s",
        )
    if end > duration:
        ctx.stats.clamped += 1
        end = duration
    return Caption(start=start, end=end, text=text, text_en=text_en, audio_dependent=audio_dependent)


def _check_split(split: Any) -> str:
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {list(SPLITS)}.")
    return split


def _check_common(language: Any, source: Any, max_overshoot: Any) -> None:
    if not isinstance(language, str):
        raise ValueError(f"language must be a string code such as 'en', got {language!r}.")
    if not isinstance(source, str) or not source:
        raise ValueError(f"source must be a non-empty string, got {source!r}.")
    if isinstance(max_overshoot, bool) or not isinstance(max_overshoot, (int, float)) or not max_overshoot >= 0:
        raise ValueError(f"max_overshoot must be a number of seconds >= 0, got {max_overshoot!r}.")


def _as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


# ---------------------------------------------------------------- grouping


@dataclasses.dataclass
class _Group:
    """Captions of one video gathered over several lines (line formats).

    Attributes:
      where: the line that first named the video.
      duration: seconds; the reason it is unusable; None until a line sets it.
      captions: the captions kept so far.
      seen: captions the input gave the video, kept or refused.
    """

    where: str
    duration: Union[float, _Invalid, None] = None
    captions: list = dataclasses.field(default_factory=list)
    seen: int = 0


def _emit_groups(ctx: _Context, groups: dict[str, _Group], split: str, language: str) -> Iterator[Item]:
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


def _entry_video(
    ctx: _Context,
    video_id: str,
    duration: Union[float, _Invalid, None],
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
        except _Invalid as e:
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


def _unique_entries(ctx: _Context, obj: dict, what: str) -> Iterator[tuple[str, Any, Optional[Rejected]]]:
    """Yields (video id, entry, None) for each id that occurs once, (id, entry, Rejected) otherwise."""
    entries = _json_entries(obj)
    counts = collections.Counter(key for key, _ in entries)
    for video_id, entry in entries:
        if counts[video_id] > 1:
            message = (
                f"video id {video_id!r} occurs {counts[video_id]} times in {what}; which entry is right is ambiguous"
            )
            yield video_id, entry, ctx.reject(video_id, "duplicate_id", message, ctx.video_where(video_id))
        elif not video_id.strip():
            yield video_id, entry, ctx.reject(_as_json(video_id), "malformed", "empty video id", ctx.path)
        elif not isinstance(entry, dict):
            message = f"entry is a {type(entry).__name__}, not a JSON object"
            yield video_id, entry, ctx.reject(video_id, "malformed", message, ctx.video_where(video_id))
        else:
            yield video_id, entry, None


def _require_keys(entry: dict, keys: Iterable[str]) -> None:
    missing = [k for k in keys if k not in entry]
    if missing:
        raise _Invalid("malformed", f"entry lacks {missing} (has {sorted(entry)})")


def _require_list(entry: dict, key: str) -> list:
    value = entry[key]
    if not isinstance(value, list):
        raise _Invalid("malformed", f"{key!r} is a {type(value).__name__}, not a list")
    return value


def _span(value: Any, name: str) -> tuple[Any, Any]:
    if not (isinstance(value, list) and len(value) == 2):
        raise _Invalid("malformed", f"{name} {value!r} is not a [start, end] pair")
    return value[0], value[1]


# ---------------------------------------------------------------- Charades-STA


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
    _check_split(split)
    _check_common(language, source, max_overshoot)
    _require_file(path, "Charades-STA annotations")
    _require_file(durations, "Durations CSV")
    return _charades_sta(_Context(path, source, max_overshoot, stats), durations, split, language)


def _charades_sta(ctx: _Context, durations_path: str, split: str, language: str) -> Iterator[Item]:
    durations = _read_durations(durations_path)
    groups: dict[str, _Group] = {}
    for lineno, line, raw in _read_lines(ctx.path):
        where = ctx.line_where(lineno)
        try:
            if line is None:
                raise _Invalid("malformed", "line is not UTF-8")
            if not line.strip():
                raise _Invalid("malformed", "blank line")
            if line.count("##") != 1:
                raise _Invalid(
                    "malformed", f"expected one '##' between 'vid start end' and the sentence, found {line.count('##')}"
                )
            head, sentence = line.split("##")
            fields = head.split()
            if len(fields) != 3:
                raise _Invalid("malformed", f"expected 'vid start end' before '##', got {len(fields)} fields {fields}")
        except _Invalid as e:
            yield ctx.reject_invalid(line if line is not None else repr(raw), e, where)
            continue
        video_id, start_text, end_text = fields
        group = groups.get(video_id)
        if group is None:
            duration = durations.get(video_id)
            if duration is None:
                duration = _Invalid("unknown_duration", f"video {video_id!r} is not in durations CSV {durations_path}")
            group = groups[video_id] = _Group(where=where, duration=duration)
        group.seen += 1
        try:
            start = _time(start_text, "start")
            end = _time(end_text, "end")
            caption = _check_caption(ctx, start, end, _clean_text(sentence, "sentence"), group.duration)
        except _Invalid as e:
            yield ctx.reject_invalid(line, e, where)
            continue
        group.captions.append(caption)
    yield from _emit_groups(ctx, groups, split, language)
    ctx.log_summary()


# ---------------------------------------------------------------- ActivityNet Captions / built-in corpus


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
    _check_split(split)
    _check_common(language, source, max_overshoot)
    _require_file(path, "ActivityNet Captions annotations")
    return _activitynet(_Context(path, source, max_overshoot, stats), split, language)


def _activitynet(ctx: _Context, split: str, language: str) -> Iterator[Item]:
    data = _expect_object(_load_json_file(ctx.path), "the top level", ctx.path)
    for video_id, entry, refusal in _unique_entries(ctx, data, ctx.path):
        if refusal is not None:
            yield refusal
            continue
        try:
            duration, raw_captions = _activitynet_captions(ctx, video_id, entry, extras=None)
        except _Invalid as e:
            yield ctx.reject_invalid(video_id, e, ctx.video_where(video_id))
            continue
        yield from _entry_video(ctx, video_id, duration, raw_captions, split, language)
    ctx.log_summary()


@dataclasses.dataclass(frozen=True)
class _Extras:
    """Per-step extras of the built-in corpus, checked at the entry level."""

    text_en: list
    audio_dependent: list


def _activitynet_captions(
    ctx: _Context, video_id: str, entry: dict, extras: Optional[_Extras]
) -> tuple[float, list[tuple[str, Callable[[], Caption]]]]:
    _require_keys(entry, ("duration", "timestamps", "sentences"))
    duration = _check_duration(entry["duration"], f"video {video_id!r}")
    timestamps = _require_list(entry, "timestamps")
    sentences = _require_list(entry, "sentences")
    if len(timestamps) != len(sentences):
        raise _Invalid("malformed", f"{len(timestamps)} timestamps but {len(sentences)} sentences")

    def build(i: int) -> Caption:
        start, end = _span(timestamps[i], "timestamp")
        start, end = _json_time(start, "start"), _json_time(end, "end")
        text = _clean_text(sentences[i], "sentence")
        if extras is None:
            return _check_caption(ctx, start, end, text, duration)
        return _check_caption(ctx, start, end, text, duration, extras.text_en[i], extras.audio_dependent[i])

    raw = []
    for i, (timestamp, sentence) in enumerate(zip(timestamps, sentences)):
        input_ = _as_json({"video_id": video_id, "timestamp": timestamp, "sentence": sentence})
        raw.append((input_, lambda i=i: build(i)))
    return duration, raw


def read_builtin(
    path: str,
    *,
    language: str = "",
    source: str = "builtin",
    max_overshoot: float = DEFAULT_MAX_OVERSHOOT,
    stats: Optional[ReadStats] = None,
) -> Iterator[Item]:
    """Reads the built-in corpus written by `python -m corpus.synthetic`.

    `<path>/annotations.json` is ActivityNet Captions JSON whose entries may also
    carry `language` (str), `sentences_en` (an English caption per step, filling
    Caption.text_en) and `audio_dependent` (0 or 1 per step); absent, they default
    to `language`, '' and -1. The per-step `steps` key is not carried into the
    record. `<path>/splits.json` is `{split: [ids]}` with splits from
    records.SPLITS; each video must be in exactly one. media_path is
    `videos/<id>.mp4`, relative to the corpus dir, so pass the corpus dir as the
    videos dir to resolve_media_path.

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
    _check_common(language, source, max_overshoot)
    if not isinstance(path, str) or not _exists(path, want_dir=True):
        raise FileNotFoundError(f"Built-in corpus directory {path!r}: no such directory.")
    join = posixpath.join if _is_remote(path) else os.path.join
    annotations_path, splits_path = join(path, "annotations.json"), join(path, "splits.json")
    _require_file(annotations_path, "Built-in corpus annotations")
    _require_file(splits_path, "Built-in corpus splits")
    ctx = _Context(annotations_path, source, max_overshoot, stats)
    return _builtin(ctx, splits_path, language)


def _read_splits(path: str) -> dict[str, list[str]]:
    splits = _expect_object(_load_json_file(path), "the top level", path)
    for name, ids in splits.items():
        if name not in SPLITS:
            raise ValueError(f"{path}: split {name!r} is not one of {list(SPLITS)}.")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"{path}: split {name!r} must be a list of video id strings, got {ids!r:.200}.")
    return splits


def _builtin_extras(entry: dict, n: int) -> _Extras:
    text_en = entry.get("sentences_en", [""] * n)
    audio_dependent = entry.get("audio_dependent", [-1] * n)
    if not isinstance(text_en, list) or len(text_en) != n:
        raise _Invalid("malformed", f"'sentences_en' must be a list of {n} strings, got {text_en!r:.200}")
    if not isinstance(audio_dependent, list) or len(audio_dependent) != n:
        raise _Invalid(
            "malformed", f"'audio_dependent' must be a list of {n} values 0 or 1, got {audio_dependent!r:.200}"
        )
    for i, value in enumerate(audio_dependent):
        if type(value) is not int or value not in (0, 1, -1):
            raise _Invalid("malformed", f"audio_dependent[{i}] = {value!r}; valid: 0, 1 (or -1, unknown)")
    return _Extras(
        text_en=[_clean_text(t, f"sentences_en[{i}]") for i, t in enumerate(text_en)],
        audio_dependent=list(audio_dependent),
    )


def _builtin(ctx: _Context, splits_path: str, default_language: str) -> Iterator[Item]:
    splits = _read_splits(splits_path)
    membership: dict[str, list[str]] = collections.defaultdict(list)
    for name, ids in splits.items():
        for video_id in ids:
            membership[video_id].append(name)
    data = _expect_object(_load_json_file(ctx.path), "the top level", ctx.path)
    for video_id, entry, refusal in _unique_entries(ctx, data, ctx.path):
        if refusal is not None:
            yield refusal
            continue
        where = ctx.video_where(video_id)
        try:
            names = membership.get(video_id, [])
            if len(names) != 1:
                listed = f"listed under {names}" if names else "in no split"
                raise _Invalid("bad_split", f"video {video_id!r} is {listed} in {splits_path}; it needs exactly one")
            language = entry.get("language", default_language)
            if not isinstance(language, str):
                raise _Invalid("malformed", f"'language' {language!r} is not a string")
            _require_keys(entry, ("sentences",))
            extras = _builtin_extras(entry, len(_require_list(entry, "sentences")))
            duration, raw_captions = _activitynet_captions(ctx, video_id, entry, extras)
        except _Invalid as e:
            yield ctx.reject_invalid(video_id, e, where)
            continue
        yield from _entry_video(
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


# ---------------------------------------------------------------- YouCook2


def read_youcook2(
    path: str,
    *,
    language: str = "en",
    source: str = "youcook2",
    max_overshoot: float = DEFAULT_MAX_OVERSHOOT,
    stats: Optional[ReadStats] = None,
) -> Iterator[Item]:
    """Reads YouCook2 JSON `{"database": {vid: {duration, subset, annotations}}}`.

    Each video's `subset` gives its split (training/validation/testing ->
    train/val/test); each annotation `{"segment": [s, e], "sentence": ...}` is
    a caption.

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
    _check_common(language, source, max_overshoot)
    _require_file(path, "YouCook2 annotations")
    return _youcook2(_Context(path, source, max_overshoot, stats), language)


def _youcook2(ctx: _Context, language: str) -> Iterator[Item]:
    data = _expect_object(_load_json_file(ctx.path), "the top level", ctx.path)
    if "database" not in data:
        raise ValueError(f"{ctx.path}: YouCook2 JSON needs a top-level 'database' key, found {sorted(data)[:10]}.")
    database = _expect_object(data["database"], "'database'", ctx.path)
    for video_id, entry, refusal in _unique_entries(ctx, database, f"{ctx.path} 'database'"):
        if refusal is not None:
            yield refusal
            continue
        try:
            _require_keys(entry, ("duration", "subset", "annotations"))
            subset = entry["subset"]
            if not isinstance(subset, str) or subset not in YOUCOOK2_SUBSETS:
                raise _Invalid("bad_split", f"subset {subset!r} is not one of {list(YOUCOOK2_SUBSETS)}")
            duration = _check_duration(entry["duration"], f"video {video_id!r}")
            annotations = _require_list(entry, "annotations")
        except _Invalid as e:
            yield ctx.reject_invalid(video_id, e, ctx.video_where(video_id))
            continue

        def build(annotation: Any, duration: float = duration) -> Caption:
            if not isinstance(annotation, dict) or "segment" not in annotation or "sentence" not in annotation:
                raise _Invalid("malformed", "annotation is not an object with 'segment' and 'sentence'")
            start, end = _span(annotation["segment"], "segment")
            start, end = _json_time(start, "start"), _json_time(end, "end")
            return _check_caption(ctx, start, end, _clean_text(annotation["sentence"], "sentence"), duration)

        raw = [(_as_json({"video_id": video_id, "annotation": a}), lambda a=a: build(a)) for a in annotations]
        yield from _entry_video(ctx, video_id, duration, raw, YOUCOOK2_SUBSETS[subset], language)
    ctx.log_summary()


# ---------------------------------------------------------------- QVHighlights


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

    Each line is `{"qid", "query", "duration", "vid", "relevant_windows": [[s, e], ...]}`;
    captions are grouped by `vid`. The first accepted line of a video sets its
    duration; a later line that disagrees is refused. Line refusals are yielded
    as they are found; videos follow, in order of first appearance.

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
    _check_split(split)
    _check_common(language, source, max_overshoot)
    _require_file(path, "QVHighlights annotations")
    return _qvhighlights(_Context(path, source, max_overshoot, stats), split, language)


def _qvhighlights_line(line: Optional[str]) -> dict:
    if line is None:
        raise _Invalid("malformed", "line is not UTF-8")
    if not line.strip():
        raise _Invalid("malformed", "blank line")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise _Invalid("malformed", f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise _Invalid("malformed", f"line is a JSON {type(obj).__name__}, not an object")
    _require_keys(obj, ("qid", "query", "duration", "vid"))
    if not isinstance(obj["vid"], str) or not obj["vid"].strip():
        raise _Invalid("malformed", f"vid {obj['vid']!r} is not a non-empty string")
    qid = obj["qid"]
    if isinstance(qid, bool) or not isinstance(qid, (int, str)):
        raise _Invalid("malformed", f"qid {qid!r} is not an integer or string")
    windows = obj.get("relevant_windows")
    if windows is None or windows == []:
        raise _Invalid("no_windows", f"query {qid!r} has no relevant_windows; a caption needs a time span")
    if not isinstance(windows, list):
        raise _Invalid("malformed", f"relevant_windows {windows!r:.200} is not a list")
    return obj


def _qvhighlights(ctx: _Context, split: str, language: str) -> Iterator[Item]:
    parsed = []
    for lineno, line, raw in _read_lines(ctx.path):
        try:
            parsed.append((lineno, line, _qvhighlights_line(line)))
        except _Invalid as e:
            yield ctx.reject_invalid(line if line is not None else repr(raw), e, ctx.line_where(lineno))
    qid_lines = collections.defaultdict(list)
    for lineno, _, obj in parsed:
        qid_lines[obj["qid"]].append(lineno)
    groups: dict[str, _Group] = {}
    for lineno, line, obj in parsed:
        where = ctx.line_where(lineno)
        qid, video_id = obj["qid"], obj["vid"]
        group = groups.setdefault(video_id, _Group(where=where))
        group.seen += len(obj["relevant_windows"])
        try:
            if len(qid_lines[qid]) > 1:
                raise _Invalid(
                    "duplicate_id", f"qid {qid!r} occurs on lines {qid_lines[qid]}; which is right is ambiguous"
                )
            duration = _check_duration(obj["duration"], f"video {video_id!r}")
            if group.duration is not None and group.duration != duration:
                raise _Invalid(
                    "conflicting_duration",
                    f"duration {duration!r} of video {video_id!r} disagrees with {group.duration!r} set earlier",
                )
        except _Invalid as e:
            yield ctx.reject_invalid(line, e, where)
            continue
        group.duration = duration
        for window in obj["relevant_windows"]:
            try:
                start, end = _span(window, "window")
                start, end = _json_time(start, "start"), _json_time(end, "end")
                group.captions.append(_check_caption(ctx, start, end, _clean_text(obj["query"], "query"), duration))
            except _Invalid as e:
                input_ = _as_json({"qid": qid, "vid": video_id, "window": window, "query": obj["query"]})
                yield ctx.reject_invalid(input_, e, where)
    yield from _emit_groups(ctx, groups, split, language)
    ctx.log_summary()


# ---------------------------------------------------------------- HowTo100M


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

    The three lists are parallel, one ASR segment each. A video's duration comes
    from the durations CSV when one is given (a video missing from it has its
    captions refused); without a CSV it is the last end time among the video's
    valid captions, a lower bound of the true duration.

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
    _check_split(split)
    _check_common(language, source, max_overshoot)
    _require_file(path, "HowTo100M captions")
    if durations is not None:
        _require_file(durations, "Durations CSV")
    return _howto100m(_Context(path, source, max_overshoot, stats), durations, split, language)


def _howto100m(ctx: _Context, durations_path: Optional[str], split: str, language: str) -> Iterator[Item]:
    durations = _read_durations(durations_path) if durations_path is not None else None
    data = _expect_object(_load_json_file(ctx.path), "the top level", ctx.path)
    for video_id, entry, refusal in _unique_entries(ctx, data, ctx.path):
        if refusal is not None:
            yield refusal
            continue
        try:
            _require_keys(entry, ("start", "end", "text"))
            starts, ends, texts = (_require_list(entry, k) for k in ("start", "end", "text"))
            if not len(starts) == len(ends) == len(texts):
                raise _Invalid(
                    "malformed",
                    f"parallel lists differ in length: {len(starts)} start, {len(ends)} end, {len(texts)} text",
                )
        except _Invalid as e:
            yield ctx.reject_invalid(video_id, e, ctx.video_where(video_id))
            continue
        duration: Union[float, _Invalid, None] = None
        if durations is not None:
            duration = durations.get(video_id)
            if duration is None:
                duration = _Invalid("unknown_duration", f"video {video_id!r} is not in durations CSV {durations_path}")
        # Without a CSV the duration is the last valid end, so no caption can pass it.
        limit = math.inf if duration is None else duration

        def build(start: Any, end: Any, text: Any, limit: Union[float, _Invalid] = limit) -> Caption:
            start, end = _json_time(start, "start"), _json_time(end, "end")
            return _check_caption(ctx, start, end, _clean_text(text, "text"), limit)

        raw = [
            (
                _as_json({"video_id": video_id, "start": s, "end": e, "text": t}),
                lambda s=s, e=e, t=t: build(s, e, t),
            )
            for s, e, t in zip(starts, ends, texts)
        ]
        if isinstance(duration, _Invalid) and not raw:
            yield ctx.reject_invalid(video_id, duration, ctx.video_where(video_id))
            continue
        yield from _entry_video(ctx, video_id, duration, raw, split, language)
    ctx.log_summary()


# ---------------------------------------------------------------- registry


READERS: dict[str, Callable[..., Iterator[Item]]] = {
    "charades_sta": read_charades_sta,
    "activitynet": read_activitynet,
    "youcook2": read_youcook2,
    "qvhighlights": read_qvhighlights,
    "howto100m": read_howto100m,
    "builtin": read_builtin,
}


def read_annotations(fmt: str, path: str, **kwargs) -> Iterator[Item]:
    """Reads annotations of a registered format.

    Args:
      fmt: a key of READERS.
      path: the annotation file (the corpus directory for 'builtin').
      **kwargs: the format's reader arguments (split, durations, language, ...).

    Returns:
      The reader's lazy iterator of VideoAnnotation and Rejected.

    Raises:
      ValueError: for an unknown format, arguments the format's reader does not
        take (or a required one missing), or a bad argument value.
      FileNotFoundError: if an input file does not exist.
    """
    reader = READERS.get(fmt)
    if reader is None:
        raise ValueError(f"Unknown annotation format {fmt!r}; valid formats: {', '.join(sorted(READERS))}.")
    signature = inspect.signature(reader)
    try:
        signature.bind(path, **kwargs)
    except TypeError as e:
        takes = ", ".join(
            f"{name}{'' if p.default is inspect.Parameter.empty else '=' + repr(p.default)}"
            for name, p in list(signature.parameters.items())[1:]
        )
        raise ValueError(f"Annotation format {fmt!r}: {e}. It takes: {takes}.") from None
    return reader(path, **kwargs)


def check_annotations(fmt: str, path: str, **kwargs) -> None:
    """Reads `path` as `fmt` up to its first video, so that a wrong file or format stops a job before it starts.

    A file where some entries are refused passes: the job sends those to its
    dead letter. A file that gives no video at all fails, since a job over it
    would write nothing: either the format is wrong or the file is. The read
    stops at the first video, so a good file costs only what the reader must
    read to emit one (JSON formats and Charades-STA read the whole file).

    Args:
      fmt: a key of READERS.
      path: the annotation file (the corpus directory for 'builtin').
      **kwargs: the format's reader arguments, as for read_annotations.

    Raises:
      ValueError: the file gives no video, or cannot be read as `fmt` at all;
        the message names the file, the format, the refusals by kind, the first
        reasons, and the format the file looks like when that is another one.
        Also as read_annotations (unknown format, bad reader arguments).
      FileNotFoundError: as read_annotations; when `path` exists but looks like
        another format (a corpus directory given with a file format), the
        message says which.
    """
    stats = kwargs.setdefault("stats", ReadStats(log_rejections=False))
    try:
        items = read_annotations(fmt, path, **kwargs)
    except FileNotFoundError as e:
        # E.g. a corpus directory given with a file format: say what it is.
        looks_like = _looks_like(path, fmt)
        if not looks_like:
            raise
        raise FileNotFoundError(f"{str(e).rstrip('.')}.{looks_like}") from e
    reasons: list[str] = []
    try:
        for item in items:
            if isinstance(item, VideoAnnotation):
                return
            if len(reasons) < _CHECK_REASONS:
                reasons.append(item.reason if len(item.reason) <= 200 else item.reason[:197] + "...")
    except ValueError as e:
        reason = str(e).rstrip(".")
        raise ValueError(f"{path} cannot be read as format {fmt!r}: {reason}.{_looks_like(path, fmt)}") from e
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()
    refused = sum(stats.rejected.values())
    if refused:
        kinds = ", ".join(f"{n} {kind}" for kind, n in stats.rejected.most_common())
        detail = f"every entry was refused ({kinds}); the first: {'; '.join(reasons)}"
    else:
        detail = "it holds no entries"
    raise ValueError(f"{path} read as format {fmt!r} gives no video: {detail}.{_looks_like(path, fmt)}")


def _looks_like(path: str, fmt: str) -> str:
    guess = guess_format(path)
    return f" It looks like format {guess!r}." if guess is not None and guess != fmt else ""


def guess_format(path: str) -> Optional[str]:
    """The format that `path` looks like from its first bytes, or None.

    A cheap sniff for error messages, not a validation (the readers decide):
    a directory with annotations.json is 'builtin'; a first line that is a JSON
    object with `qid` or `relevant_windows` is 'qvhighlights'; other JSON is
    told apart by the keys in its first 64 KiB ('database': 'youcook2';
    'timestamps' and 'sentences': 'activitynet'; 'start', 'end' and 'text':
    'howto100m'); a first line `vid start end##...` is 'charades_sta'.

    Args:
      path: an annotation file or corpus directory.

    Returns:
      A key of READERS, or None when nothing matches or the path cannot be read.
    """
    try:
        if _exists(path, want_dir=True):
            join = posixpath.join if _is_remote(path) else os.path.join
            return "builtin" if _exists(join(path, "annotations.json"), want_dir=False) else None
        if not _exists(path, want_dir=False):
            return None
        with _open_binary(path) as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return None
    text = head.decode("utf-8-sig", errors="replace").lstrip()
    first = text.split("\n", 1)[0].strip()
    if text.startswith("{"):
        try:
            line = json.loads(first)
        except json.JSONDecodeError:
            line = None
        if isinstance(line, dict) and ("qid" in line or "relevant_windows" in line):
            return "qvhighlights"
        keys = set(re.findall(r'"([^"\\]+)"\s*:', text))
        if "database" in keys:
            return "youcook2"
        if {"timestamps", "sentences"} <= keys:
            return "activitynet"
        if {"start", "end", "text"} <= keys:
            return "howto100m"
        return None
    if re.match(r"\S+\s+\S+\s+\S+\s*##", first):
        return "charades_sta"
    return None


# ---------------------------------------------------------------- media paths


def resolve_media_path(
    videos_dir: str, annotation: VideoAnnotation, extensions: Iterable[str] = MEDIA_EXTENSIONS
) -> str:
    """Returns the media file of a video, inside `videos_dir`.

    The path is `<videos_dir>/<media_path>` when the annotation has a
    media_path, else `<videos_dir>/<video_id><ext>` for the first extension
    whose file exists. The path is confined to `videos_dir` by confine_path:
    local paths are checked after resolving symlinks, so a file (or a symlink)
    that lands outside `videos_dir` is refused and links to media stored
    elsewhere must be made at the directory level (a symlinked `videos_dir` is
    fine). Paths with a URL scheme (gs://...) go through tf.io.gfile and are
    checked lexically.

    Args:
      videos_dir: the directory media paths are relative to.
      annotation: the video.
      extensions: file extensions tried in order, each starting with '.'.

    Returns:
      The media file path, `videos_dir` joined with the relative path.

    Raises:
      ValueError: if the path would escape `videos_dir` (absolute path, '..',
        a symlink pointing outside), or `extensions` is empty or malformed.
      FileNotFoundError: naming the video id and every path tried, if none
        exists (or naming `videos_dir` if it is not a directory).
    """
    extensions = tuple(extensions)
    if not extensions or not all(
        isinstance(e, str) and e.startswith(".") and len(e) > 1 and "/" not in e and os.sep not in e for e in extensions
    ):
        raise ValueError(f"extensions must be a non-empty sequence of suffixes like '.mp4', got {extensions!r}.")
    if annotation.media_path is not None:
        candidates = [annotation.media_path]
    else:
        candidates = [annotation.video_id + ext for ext in extensions]
    # Refuse an escaping annotation before touching any file system.
    paths = [
        confine_path(videos_dir, relative, f"Media path {relative!r} of video {annotation.video_id!r}", "videos dir")
        for relative in candidates
    ]
    if not _exists(videos_dir, want_dir=True):
        raise FileNotFoundError(f"Videos dir {videos_dir!r} of video {annotation.video_id!r}: no such directory.")
    for path in paths:
        if _exists(path, want_dir=False):
            return path
    raise FileNotFoundError(f"No media file for video {annotation.video_id!r}; tried: {', '.join(paths)}.")


def confine_path(directory: str, relative: str, what: str, directory_kind: str = "directory") -> str:
    """Joins `relative` onto `directory`, refusing any path that leaves it.

    The one confinement rule for every path that input data names (media
    paths, imported feature files): local paths are checked after resolving
    symlinks, so a file or a symlink that lands outside `directory` is refused
    (a symlinked `directory` itself is fine); paths with a URL scheme (gs://...)
    are checked lexically. Nothing is read: the file need not exist.

    Args:
      directory: the directory the path must stay in.
      relative: the path from the input data, relative to `directory`.
      what: the path and whose it is, starting an error message
        (e.g. "Media path 'a.mp4' of video 'a'").
      directory_kind: what `directory` is, for the message (e.g. "videos dir").

    Returns:
      `directory` joined with `relative`.

    Raises:
      ValueError: naming `what` and `directory`, if `relative` is empty, holds a
        NUL byte, is absolute, climbs out with '..', names the directory itself,
        or resolves (through symlinks) outside it.
    """

    def escape(detail: str) -> ValueError:
        return ValueError(f"{what} is not a file inside {directory_kind} {directory!r}: {detail}.")

    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise escape("it is empty or contains a NUL byte")
    if _is_remote(directory):
        if relative.startswith("/") or _is_remote(relative):
            raise escape("it is absolute")
        normalized = posixpath.normpath(relative)
        if normalized == ".." or normalized.startswith("../"):
            raise escape("it climbs out with '..'")
        return directory.rstrip("/") + "/" + normalized
    if os.path.isabs(relative):
        raise escape("it is absolute")
    path = os.path.join(directory, relative)
    root = os.path.realpath(directory)
    real = os.path.realpath(path)
    if real == root:
        raise escape("it names the directory itself")
    if os.path.commonpath([root, real]) != root:
        raise escape(f"it resolves to {real!r}, outside {root!r}")
    return path
