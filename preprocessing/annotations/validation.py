"""The readers' validation policy: what refuses a caption or a video, and the counts of a read.

The names here are the package's shared machinery, not its API: the format
modules use them; callers use ReadStats, REJECT_KINDS and
DEFAULT_MAX_OVERSHOOT through `preprocessing.annotations`.

Structure is checked first, then the caption's own fields (times, then text),
then the caption against its video's duration; the first failing rule gives the
reason, whose kind is one of REJECT_KINDS:

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
  all_captions_rejected  a video that had captions in the input but kept none.

An end up to `max_overshoot` seconds past the duration is clamped to the
duration: real annotations do this routinely. In the Charades-STA test queries
562 of 3720 ends pass the video's length, by up to 1.5 s (228 by more than
1 s); in ActivityNet Captions val_1 134 of 17505 do, 5 by 0.01 s and 129 only
because the file stores durations such as 95.03999999999999 next to ends of
95.04. The number of clamped captions is kept in ReadStats.clamped and logged
when the read finishes.

Rejected.reason is `<kind>: <what is wrong, naming the value> (<where>)`, so
the dead letter can be grouped by kind; ReadStats.rejected counts the same kinds.
Caption text has its whitespace normalized (stripped, runs collapsed to one
space).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
from typing import Any, Iterable, Optional, Union

from preprocessing.records import SPLITS, Caption, Rejected, VideoAnnotation

STAGE = "ReadAnnotations"
# Also PreprocessConfig's default. 1.0 would refuse 228 of 3720 Charades-STA test ends (1-1.5 s over).
DEFAULT_MAX_OVERSHOOT = 2.0
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

Item = Union[VideoAnnotation, Rejected]


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


class Invalid(Exception):
    """A refusal: `kind` is one of REJECT_KINDS, `message` names the offending value."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class Context:
    """What one read shares: where it reads, its settings, its counts."""

    def __init__(self, path: str, source: str, max_overshoot: float, stats: Optional[ReadStats]):
        self.path = path
        self.source = source
        self.max_overshoot = max_overshoot
        self.stats = stats if stats is not None else ReadStats()

    def reject(self, input_: str, kind: str, message: str, where: str) -> Rejected:
        """Counts and logs a refusal and returns its dead letter."""
        self.stats.rejected[kind] += 1
        if self.stats.log_rejections:
            logging.warning("%s: rejected %s: %s (%s)", self.source, input_, message, where)
        return Rejected(input=input_, stage=STAGE, reason=f"{kind}: {message} ({where})")

    def reject_invalid(self, input_: str, error: Invalid, where: str) -> Rejected:
        return self.reject(input_, error.kind, error.message, where)

    def video(self, annotation: VideoAnnotation) -> VideoAnnotation:
        """Counts an emitted video and returns it."""
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


# ---------------------------------------------------------------- reader arguments


def check_split(split: Any) -> str:
    """Returns `split` if it is one of records.SPLITS; raises ValueError naming it otherwise."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {list(SPLITS)}.")
    return split


def check_common(language: Any, source: Any, max_overshoot: Any) -> None:
    """Checks the arguments every reader takes; raises ValueError naming a bad one."""
    if not isinstance(language, str):
        raise ValueError(f"language must be a string code such as 'en', got {language!r}.")
    if not isinstance(source, str) or not source:
        raise ValueError(f"source must be a non-empty string, got {source!r}.")
    if isinstance(max_overshoot, bool) or not isinstance(max_overshoot, (int, float)) or not max_overshoot >= 0:
        raise ValueError(f"max_overshoot must be a number of seconds >= 0, got {max_overshoot!r}.")


# ---------------------------------------------------------------- structure


def require_keys(entry: dict, keys: Iterable[str]) -> None:
    missing = [k for k in keys if k not in entry]
    if missing:
        raise Invalid("malformed", f"entry lacks {missing} (has {sorted(entry)})")


def require_list(entry: dict, key: str) -> list:
    value = entry[key]
    if not isinstance(value, list):
        raise Invalid("malformed", f"{key!r} is a {type(value).__name__}, not a list")
    return value


def span(value: Any, name: str) -> tuple[Any, Any]:
    """The two items of a JSON `[start, end]` pair, not yet checked as times."""
    if not (isinstance(value, list) and len(value) == 2):
        raise Invalid("malformed", f"{name} {value!r} is not a [start, end] pair")
    return value[0], value[1]


def as_json(value: Any) -> str:
    """`value` as the input shown in a refusal: compact JSON, non-ASCII kept readable."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


# ---------------------------------------------------------------- fields and captions


def parse_time(value: Any, name: str) -> float:
    """A time from text (a str token) or JSON (a number); finite or Invalid."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise Invalid("bad_time", f"{name} {value!r} is not a number") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise Invalid("bad_time", f"{name} {value!r} is not a number")
    if not math.isfinite(number):
        raise Invalid("bad_time", f"{name} {value!r} is not finite")
    return number


def json_time(value: Any, name: str) -> float:
    """A time from JSON, which must be a JSON number (a string is refused)."""
    if isinstance(value, str):
        raise Invalid("bad_time", f"{name} {value!r} is a string, not a JSON number")
    return parse_time(value, name)


def check_duration(value: Any, what: str) -> float:
    """`value` as seconds if it is a finite number > 0; Invalid otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid("bad_duration", f"duration {value!r} is not a number ({what})")
    if not (math.isfinite(value) and value > 0):
        raise Invalid("bad_duration", f"duration {value!r} is not a finite number > 0 ({what})")
    return float(value)


def clean_text(value: Any, name: str) -> str:
    """Caption text with its whitespace normalized; Invalid if it is not a string."""
    if not isinstance(value, str):
        raise Invalid("malformed", f"{name} {value!r} is not a string")
    return " ".join(value.split())


def check_caption(
    ctx: Context,
    start: float,
    end: float,
    text: str,
    duration: Union[float, Invalid],
    text_en: str = "",
    audio_dependent: int = -1,
) -> Caption:
    """Applies the policy to parsed times and cleaned text; clamps a slight overshoot.

    Args:
      ctx: the read, whose max_overshoot applies and whose stats count a clamp.
      start: the parsed start.
      end: the parsed end.
      text: the cleaned text.
      duration: the video's seconds, or an Invalid when its duration is
        unknown or bad: the caption is then refused for that reason once its
        own fields pass.
      text_en: the English caption, if any.
      audio_dependent: 0 or 1, or -1 (unknown).

    Returns:
      The Caption, its end clamped to `duration` if it overshoots within tolerance.

    Raises:
      Invalid: the first rule the caption breaks.
    """
    if not text:
        raise Invalid("empty_text", "caption text is empty")
    if start < 0:
        raise Invalid("negative_start", f"start {start!r} < 0")
    if end < start:
        raise Invalid("end_before_start", f"end {end!r} < start {start!r}")
    if end == start:
        raise Invalid("zero_length", f"end {end!r} == start {start!r}")
    if isinstance(duration, Invalid):
        # A fresh exception per caption: re-raising one instance would grow its traceback.
        raise Invalid(duration.kind, duration.message)
    if start >= duration:
        raise Invalid("start_past_duration", f"start {start!r} >= duration {duration!r}")
    if end > duration + ctx.max_overshoot:
        raise Invalid(
            "end_past_duration",
            f"end {end!r} is {end - duration:.3g} s past duration {duration!r}, "
            f"more than max_overshoot {ctx.max_overshoot!r} s",
        )
    if end > duration:
        ctx.stats.clamped += 1
        end = duration
    return Caption(start=start, end=end, text=text, text_en=text_en, audio_dependent=audio_dependent)
