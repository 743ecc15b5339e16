"""Atomic file writes for every output that a kill must not leave half written."""

from __future__ import annotations

import os

# Files being written carry this prefix until they are complete and renamed;
# a kill mid-write leaves only such a file, which readers never open.
PARTIAL_PREFIX = ".partial-"


def partial_path(path: str) -> str:
    """The temporary name `path` is written under before it is published."""
    return os.path.join(os.path.dirname(path), PARTIAL_PREFIX + os.path.basename(path))


def publish(partial: str, path: str) -> None:
    """Makes a completely written file visible under its final name.

    A rename: atomic on POSIX file systems; on object stores the object
    appears whole under its name once the copy is done.
    """
    import tensorflow as tf  # gfile: job dirs may be gs:// paths.

    tf.io.gfile.rename(partial, path, overwrite=True)


def write_text(path: str, text: str) -> None:
    """Writes `path` so that readers see the old or the new content, never a part."""
    import tensorflow as tf

    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    partial = partial_path(path)
    with tf.io.gfile.GFile(partial, "w") as f:
        f.write(text)
    publish(partial, path)
