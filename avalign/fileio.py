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


def remove_unlisted(directory: str, pattern: str, keep, leftovers: str) -> list[str]:
    """Removes the files of `directory` matching `pattern` whose names `keep` lacks, and temporary leftovers.

    An output that a job lists (its summary or schema) is complete; what else
    matches its pattern was left by an earlier run (another shard count, a
    killed run) and would mix old and new outputs.

    Args:
      directory: the directory (local or remote).
      pattern: glob of the job's output files in it.
      keep: the file names (basenames) of this run's outputs.
      leftovers: glob of the temporary files a killed run may have left.

    Returns:
      The removed paths.
    """
    import logging

    import tensorflow as tf

    keep = set(keep)
    stale = [p for p in tf.io.gfile.glob(os.path.join(directory, pattern)) if os.path.basename(p) not in keep]
    removed = []
    for path in sorted(stale) + sorted(tf.io.gfile.glob(os.path.join(directory, leftovers))):
        logging.warning("Removing %s: left by an earlier run, not part of this job's output.", path)
        tf.io.gfile.remove(path)
        removed.append(path)
    return removed
