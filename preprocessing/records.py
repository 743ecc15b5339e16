"""The normalized, format-independent record of one video and its captions."""

from __future__ import annotations

import dataclasses
from typing import Optional

# Splits every reader maps its dataset's subset names onto.
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Caption:
    """One caption and where it happens.

    Attributes:
      start: seconds from the start of the video.
      end: seconds; end >= start.
      text: the caption in its annotation language.
      text_en: an English caption of the same step, '' when none exists.
      audio_dependent: 1 if the step is hard to see and easy to hear, 0 if
        not, -1 if unknown (real datasets).
    """

    start: float
    end: float
    text: str
    text_en: str = ""
    audio_dependent: int = -1


@dataclasses.dataclass(frozen=True)
class VideoAnnotation:
    """A video with its captions, as every annotation reader emits it.

    Attributes:
      video_id: unique id within the dataset.
      duration: seconds.
      captions: the video's captions (may be empty for unlabeled video).
      split: one of SPLITS.
      language: BCP-47-ish code of the speech ('en', 'mr', 'hi', 'ja'), '' if unknown.
      source: the dataset/format name that produced the record.
      media_path: path of the media file relative to the videos dir, None if
        the reader does not know it (resolved by id then).
    """

    video_id: str
    duration: float
    captions: tuple[Caption, ...]
    split: str = "train"
    language: str = ""
    source: str = ""
    media_path: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Rejected:
    """An input that a stage refused, for the dead-letter output.

    Attributes:
      input: what was read (a file path, a line, a video id).
      stage: the stage that refused it (e.g. 'ReadAnnotations', 'DecodeVideo').
      reason: why, in words a person can act on.
    """

    input: str
    stage: str
    reason: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)
