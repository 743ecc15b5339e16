"""The annotation formats by name: each format module registers its reader, and a sniff that guess_format asks.

What a registered reader promises. It is called as `reader(path, **kwargs)`
and returns a lazy iterator of `VideoAnnotation | Rejected`. Each input line
(line formats) or caption (JSON formats) is either read into a Caption or
refused with exactly one Rejected; an entry that cannot be read at all (a
malformed video entry, a duplicated id) is refused with one Rejected naming the
video. A video that had captions in the input but kept none is also refused,
with one more Rejected naming the video. A video whose input lists no captions
at all (e.g. an empty `timestamps` list) is emitted with `captions=()`: it is
unlabeled, not broken, and retrieval training can use it. Captions keep their
input order; files may live on any tf.io.gfile file system (gs://...), with
TensorFlow imported only for such paths.

Whole-file problems are errors, not dead letters, because nothing in such a
file can be read and the format or path given is what is wrong: a missing file
raises FileNotFoundError when the reader is called; a file that is not JSON,
not the expected JSON object, or a durations CSV without its columns raises
ValueError when the iterator is first advanced.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import types
from typing import Any, Callable, Iterator, Mapping, Optional

from preprocessing.annotations.files import open_binary
from preprocessing.annotations.paths import exists
from preprocessing.annotations.validation import Item

Reader = Callable[..., Iterator[Item]]

# guess_format reads this many bytes of a file.
_SNIFF_BYTES = 1 << 16


@dataclasses.dataclass(frozen=True)
class Head:
    """What guess_format knows of a path, for the formats' sniffs.

    Attributes:
      path: the path sniffed.
      is_dir: whether it is a directory (then the other fields are empty).
      text: its first 64 KiB as text, leading whitespace and BOM stripped.
      first_line: the first line of `text`, stripped.
      first_json: when `text` starts with '{', its first line decoded as JSON,
        or None if that line is not JSON by itself.
      keys: when `text` starts with '{', the JSON object keys that `text` spells.
    """

    path: str
    is_dir: bool = False
    text: str = ""
    first_line: str = ""
    first_json: Any = None
    keys: frozenset = frozenset()

    @classmethod
    def of_bytes(cls, path: str, head: bytes) -> Head:
        """The Head of a file whose first bytes are `head`."""
        text = head.decode("utf-8-sig", errors="replace").lstrip()
        first = text.split("\n", 1)[0].strip()
        first_json, keys = None, frozenset()
        if text.startswith("{"):
            try:
                first_json = json.loads(first)
            except json.JSONDecodeError:
                pass
            keys = frozenset(re.findall(r'"([^"\\]+)"\s*:', text))
        return cls(path=path, text=text, first_line=first, first_json=first_json, keys=keys)


_READERS: dict[str, Reader] = {}
_SNIFFS: dict[str, Callable[[Head], bool]] = {}

# Format name -> reader, in registration order. Read-only: formats join through register_format.
READERS: Mapping[str, Reader] = types.MappingProxyType(_READERS)


def register_format(name: str, looks_like: Callable[[Head], bool]) -> Callable[[Reader], Reader]:
    """A decorator that registers a reader under the format name `name`.

    Args:
      name: the format's name, as `--format` and read_annotations take it.
      looks_like: a cheap test of a Head for guess_format; it should hold only
        for files of this format, since the first registered format whose test
        holds is the guess.

    Returns:
      The decorator, which returns the reader unchanged.

    Raises:
      ValueError: if `name` is already registered.
    """

    def register(reader: Reader) -> Reader:
        if name in _READERS:
            raise ValueError(f"Annotation format {name!r} is already registered (by {_READERS[name].__module__}).")
        _READERS[name] = reader
        _SNIFFS[name] = looks_like
        return reader

    return register


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


def guess_format(path: str) -> Optional[str]:
    """The format that `path` looks like from its first bytes, or None.

    A cheap sniff for error messages, not a validation (the readers decide):
    each registered format's `looks_like` is asked in registration order about
    the path's Head (a directory, or a file's first 64 KiB).

    Args:
      path: an annotation file or corpus directory.

    Returns:
      A key of READERS, or None when nothing matches or the path cannot be read.
    """
    try:
        if exists(path, want_dir=True):
            head = Head(path=path, is_dir=True)
        elif exists(path, want_dir=False):
            with open_binary(path) as f:
                head = Head.of_bytes(path, f.read(_SNIFF_BYTES))
        else:
            return None
        return next((name for name, looks_like in _SNIFFS.items() if looks_like(head)), None)
    except OSError:
        return None
