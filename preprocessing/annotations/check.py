"""The job's pre-flight check of its annotation file: a wrong file or format stops it before it starts."""

from __future__ import annotations

from preprocessing.annotations.registry import guess_format, read_annotations
from preprocessing.annotations.validation import ReadStats
from preprocessing.records import VideoAnnotation

# check_annotations quotes this many refusal reasons.
_CHECK_REASONS = 3


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
