"""Reading annotation files, local or on any tf.io.gfile file system: lines, JSON, durations CSVs."""

from __future__ import annotations

import csv
import io
import json
import logging
from typing import Any, Iterator, Optional, Union

from preprocessing.annotations.paths import exists, is_remote
from preprocessing.annotations.validation import Invalid, check_duration

DURATION_COLUMNS = ("length", "duration")


def open_binary(path: str):
    """Opens `path` for reading bytes; TensorFlow is imported only for a URL (gs://...)."""
    if is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.GFile(path, "rb")
    return open(path, "rb")


def require_file(path: str, what: str) -> None:
    """Raises FileNotFoundError naming `what` and `path` unless `path` is a file."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"{what}: expected a file path, got {path!r}.")
    if not exists(path, want_dir=False):
        raise FileNotFoundError(f"{what} {path!r}: no such file.")


def read_lines(path: str) -> Iterator[tuple[int, Optional[str], bytes]]:
    """Yields (1-based line number, decoded line or None if not UTF-8, raw bytes)."""
    with open_binary(path) as f:
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


def load_json_file(path: str) -> Any:
    """Decodes a UTF-8 JSON file, keeping duplicated keys for json_entries.

    Raises:
      ValueError: if the file is not UTF-8 JSON.
    """
    with open_binary(path) as f:
        raw = f.read()
    try:
        return json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_json_object)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a UTF-8 JSON file: {e}") from e


def json_entries(obj: dict) -> list[tuple[str, Any]]:
    """The (key, value) pairs of a JSON object in file order, duplicated keys included."""
    pairs = getattr(obj, "pairs", None)
    return list(pairs) if pairs is not None else list(obj.items())


def expect_object(value: Any, what: str, path: str) -> dict:
    """Returns `value` if it is a JSON object; raises ValueError naming `what` in `path` otherwise."""
    if not isinstance(value, dict):
        raise ValueError(f"{path}: {what} must be a JSON object, got {type(value).__name__}.")
    return value


def read_durations(path: str) -> dict[str, Union[float, Invalid]]:
    """Reads a durations CSV into {video id: seconds, or the reason it has none}.

    The CSV has columns `id` and `length` (or `duration`), like the official
    Charades_v1 CSVs; other columns are ignored.

    Raises:
      ValueError: if the header lacks `id` or both `length` and `duration`.
    """
    with open_binary(path) as f:
        text = f.read().decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []
    column = next((c for c in DURATION_COLUMNS if c in columns), None)
    if "id" not in columns or column is None:
        raise ValueError(
            f"Durations CSV {path} has columns {columns}; it needs 'id' and one of {list(DURATION_COLUMNS)}."
        )
    durations: dict[str, Union[float, Invalid]] = {}
    no_id = 0
    for row in reader:
        video_id = (row.get("id") or "").strip()
        if not video_id:
            no_id += 1
            continue
        value = (row.get(column) or "").strip()
        where = f"{column} of video {video_id!r} in {path}"
        try:
            seconds: Union[float, Invalid] = float(value)
        except ValueError:
            seconds = Invalid("bad_duration", f"duration {value!r} is not a number ({where})")
        else:
            try:
                seconds = check_duration(seconds, where)
            except Invalid as e:
                seconds = e
        previous = durations.get(video_id)
        if isinstance(previous, Invalid):
            continue
        if previous is not None and previous != seconds:
            seconds = Invalid(
                "conflicting_duration", f"{path} gives video {video_id!r} two durations, {previous!r} and {value!r}"
            )
        durations[video_id] = seconds
    if no_id:
        logging.warning("Durations CSV %s: %d rows without an id were skipped.", path, no_id)
    return durations
