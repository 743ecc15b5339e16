"""Versioned export directories: `<base>/<version>/`, never written over."""

from __future__ import annotations

import os

import tensorflow as tf


def next_version_dir(base: str) -> str:
    """`<base>/<n+1>` where n is the highest integer version already there (0 if none)."""
    tf.io.gfile.makedirs(base)
    versions = [int(name.rstrip("/")) for name in tf.io.gfile.listdir(base) if name.rstrip("/").isdigit()]
    return os.path.join(base, str(max(versions, default=0) + 1))


def latest_version_dir(base: str) -> str:
    """The highest integer version under `base`.

    Raises:
      FileNotFoundError: no version exists.
    """
    versions = (
        [int(n.rstrip("/")) for n in tf.io.gfile.listdir(base) if n.rstrip("/").isdigit()]
        if tf.io.gfile.exists(base)
        else []
    )
    if not versions:
        raise FileNotFoundError(f"{base}: no exported version (expected <base>/<integer>/).")
    return os.path.join(base, str(max(versions)))
