"""Paths that input data names: local or URL, confined to their directory, and a video's media file."""

from __future__ import annotations

import os
import posixpath
import re
from typing import Iterable

from preprocessing.records import VideoAnnotation

MEDIA_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".wav", ".flac", ".mp3", ".ogg")

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_remote(path: str) -> bool:
    """Whether `path` has a URL scheme (gs://...), so that only tf.io.gfile can reach it."""
    return bool(_SCHEME.match(path))


def exists(path: str, want_dir: bool) -> bool:
    """Whether `path` is a directory (`want_dir`) or a file; TensorFlow is imported only for a URL."""
    if is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path) and tf.io.gfile.isdir(path) == want_dir
    return os.path.isdir(path) if want_dir else os.path.isfile(path)


def join(directory: str, name: str) -> str:
    """`directory`/`name`, with '/' for a URL whatever the local separator."""
    return posixpath.join(directory, name) if is_remote(directory) else os.path.join(directory, name)


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
    if not exists(videos_dir, want_dir=True):
        raise FileNotFoundError(f"Videos dir {videos_dir!r} of video {annotation.video_id!r}: no such directory.")
    for path in paths:
        if exists(path, want_dir=False):
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
    if is_remote(directory):
        if relative.startswith("/") or is_remote(relative):
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
