"""Pre-extracted per-video features (npy directories, C3D-style HDF5) in place of decoded video.

Charades, ActivityNet and others distribute C3D / I3D features rather than
videos: one (N, dim) matrix per video at some fixed rate. A source loads a video's
matrix by id; `resample_features` brings it to a stream's rate and length, with
the package's convention that vector i describes time i / rate.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Optional

import h5py
import numpy as np
import tensorflow as tf

from preprocessing.annotations.paths import confine_path

logger = logging.getLogger(__name__)

RESAMPLE_METHODS = ("mean", "nearest")


def _check_rate(rate: float, what: str) -> float:
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
        raise ValueError(f"{what} must be a finite number > 0, got {rate!r}.")
    return float(rate)


def validate_features(features: np.ndarray, video_id: str, where: str) -> np.ndarray:
    """Returns `features` as float32 after checking it is a finite, non-empty (N, dim) matrix.

    Args:
      features: the loaded array.
      video_id: the video it belongs to, for messages.
      where: the file it came from, for messages.

    Raises:
      ValueError: not 2-D, no rows or columns, not numeric, or NaN / Inf values;
        the message names the video and the file.
    """
    if features.ndim != 2:
        raise ValueError(f"Features of video {video_id!r} in {where} must be 2-D (N, dim), got shape {features.shape}.")
    if 0 in features.shape:
        raise ValueError(f"Features of video {video_id!r} in {where} are empty: shape {features.shape}.")
    if not (np.issubdtype(features.dtype, np.floating) or np.issubdtype(features.dtype, np.integer)):
        raise ValueError(f"Features of video {video_id!r} in {where} have non-numeric dtype {features.dtype}.")
    features = features.astype(np.float32, copy=False)
    if not np.all(np.isfinite(features)):
        bad = int(np.size(features) - np.count_nonzero(np.isfinite(features)))
        raise ValueError(f"Features of video {video_id!r} in {where} contain {bad} NaN or Inf values.")
    return features


class NpyFeatureSource:
    """A directory of one `.npy` matrix (N, dim) per video.

    Paths go through `tf.io.gfile`, so the directory may be on GCS or another
    file system that TensorFlow reads.

    Attributes:
      directory: where the files are.
      rate: feature vectors per second in the files.
      pattern: file name of a video relative to `directory`, with a
        `{video_id}` field.
      version: what the features are, recorded beside them in the TFRecords.
    """

    def __init__(self, directory: str, rate: float, pattern: str = "{video_id}.npy"):
        """Checks the arguments (the directory must exist; files are read on `load`).

        Raises:
          ValueError: a bad rate or a pattern without `{video_id}`.
          FileNotFoundError: the directory does not exist.
        """
        self.rate = _check_rate(rate, "NpyFeatureSource rate")
        if "{video_id}" not in pattern:
            raise ValueError(f"NpyFeatureSource pattern must contain '{{video_id}}', got {pattern!r}.")
        if not tf.io.gfile.isdir(directory):
            raise FileNotFoundError(f"Feature directory {directory} does not exist.")
        self.directory = directory
        self.pattern = pattern
        self.version = f"npy:{os.path.join(directory, pattern)}"

    def path(self, video_id: str) -> str:
        """The file that holds `video_id`'s features, confined to `directory`.

        Video ids come from annotation files, so the file name they make is
        confined as media paths are (confine_path): an id such as
        '../secret' or '/etc/x', or a file that is a symlink leading out of
        `directory`, is refused.

        Raises:
          ValueError: the file would lie outside `directory`; the message names
            the video, the file name and the directory.
        """
        relative = self.pattern.format(video_id=video_id)
        what = f"Feature file {relative!r} of video {video_id!r}"
        return confine_path(self.directory, relative, what, "feature directory")

    def __contains__(self, video_id: str) -> bool:
        """Whether `video_id` has a feature file; raises ValueError as `path` for an escaping id."""
        return tf.io.gfile.exists(self.path(video_id))

    def load(self, video_id: str) -> np.ndarray:
        """Loads one video's features.

        Returns:
          float32 (N, dim) at `rate` vectors per second.

        Raises:
          KeyError: no file for `video_id` (the message names the id and the path).
          ValueError: the file would lie outside `directory` (see `path`), is not
            a numpy array file, or its array is not a finite non-empty (N, dim)
            matrix.
        """
        path = self.path(video_id)
        if not tf.io.gfile.exists(path):
            raise KeyError(f"No features for video {video_id!r}: {path} does not exist.")
        with tf.io.gfile.GFile(path, "rb") as f:
            try:
                features = np.load(f, allow_pickle=False)
            except (ValueError, OSError) as e:
                raise ValueError(f"Features of video {video_id!r}: {path} is not a readable .npy file: {e}") from e
        if not isinstance(features, np.ndarray):
            raise ValueError(f"Features of video {video_id!r}: {path} holds an archive, not one array.")
        return validate_features(features, video_id, path)


class Hdf5FeatureSource:
    """One HDF5 file keyed by video id, as ActivityNet's C3D features are shipped.

    `file[video_id]` is either the (N, dim) dataset itself or a group holding it
    (ActivityNet: `file[video_id]["c3d_features"]`). The file is opened lazily, on
    the first `load` in each process, and a pickled source carries no open handle
    (h5py handles cannot be pickled), so one source can be shipped to Beam workers.

    Attributes:
      path: the HDF5 file (local; h5py reads local files only).
      rate: feature vectors per second in the file.
      dataset_key: the dataset inside each video's group; None takes the group's
        only dataset.
      version: what the features are, recorded beside them in the TFRecords.
    """

    def __init__(self, path: str, rate: float, dataset_key: Optional[str] = None):
        """Checks the arguments; the file itself is opened on first use.

        Raises:
          ValueError: a bad rate.
          FileNotFoundError: the file does not exist.
        """
        self.rate = _check_rate(rate, "Hdf5FeatureSource rate")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Feature file {path} does not exist.")
        self.path = path
        self.dataset_key = dataset_key or None
        suffix = f"[{self.dataset_key}]" if self.dataset_key else ""
        self.version = f"hdf5:{path}{suffix}"
        self._file: Optional[h5py.File] = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None
        return state

    def _open(self) -> h5py.File:
        if self._file is None:
            logger.info("Opening feature file %s (pid %d)", self.path, os.getpid())
            self._file = h5py.File(self.path, "r")
        return self._file

    def close(self) -> None:
        """Closes the file if this process opened it; a later `load` reopens it."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._open()

    def load(self, video_id: str) -> np.ndarray:
        """Loads one video's features.

        Returns:
          float32 (N, dim) at `rate` vectors per second.

        Raises:
          KeyError: the file has no entry for `video_id`, or its group lacks
            `dataset_key` (the message names the id, the key and the file).
          ValueError: the group holds several datasets and no `dataset_key` says
            which, or the array is not a finite non-empty (N, dim) matrix.
        """
        f = self._open()
        if video_id not in f:
            raise KeyError(f"No features for video {video_id!r} in {self.path}.")
        node = f[video_id]
        where = f"{self.path}:/{video_id}"
        if isinstance(node, h5py.Group):
            if self.dataset_key is not None:
                if self.dataset_key not in node or not isinstance(node[self.dataset_key], h5py.Dataset):
                    raise KeyError(
                        f"Video {video_id!r} in {self.path} has no dataset {self.dataset_key!r}; it has {sorted(node)}."
                    )
                node = node[self.dataset_key]
            else:
                datasets = [k for k in node if isinstance(node[k], h5py.Dataset)]
                if len(datasets) != 1:
                    raise ValueError(
                        f"Video {video_id!r} in {self.path} is a group with datasets {sorted(datasets)}; "
                        "set dataset_key to choose one."
                    )
                node = node[datasets[0]]
            where = f"{self.path}:{node.name}"
        return validate_features(np.asarray(node[()]), video_id, where)


def resample_features(
    features: np.ndarray,
    source_rate: float,
    target_rate: float,
    duration: float,
    method: str = "mean",
) -> np.ndarray:
    """Brings imported features to a stream's rate and to the video's length.

    Source vector j describes time j / source_rate and output vector i describes
    time i / target_rate; there are N = max(1, ceil(duration * target_rate - 1e-6))
    output vectors, as the video's extractors would produce.

    Methods:
      - 'mean': output i averages the source vectors whose times fall in
        [(i - 0.5) / target_rate, (i + 0.5) / target_rate), which is mean pooling
        when the source is denser; where that window holds no source vector
        (upsampling), it takes the nearest one.
      - 'nearest': output i is the source vector nearest in time (ties go later).

    Times past the last source vector (files that end before the video does)
    repeat the last vector; source vectors past the last output's window are ignored.

    Args:
      features: (M, dim) source features.
      source_rate: source vectors per second.
      target_rate: output vectors per second.
      duration: the video's duration in seconds.
      method: one of RESAMPLE_METHODS.

    Returns:
      float32 (N, dim).

    Raises:
      ValueError: bad rates, duration or method, or features that are not a
        non-empty 2-D matrix.
    """
    source_rate = _check_rate(source_rate, "source_rate")
    target_rate = _check_rate(target_rate, "target_rate")
    if not (math.isfinite(duration) and duration >= 0):
        raise ValueError(f"duration must be a finite number >= 0, got {duration!r}.")
    if method not in RESAMPLE_METHODS:
        raise ValueError(f"Unknown resample method {method!r}; valid: {RESAMPLE_METHODS}.")
    features = np.asarray(features)
    if features.ndim != 2 or 0 in features.shape:
        raise ValueError(f"features must be a non-empty 2-D (N, dim) matrix, got shape {features.shape}.")
    features = features.astype(np.float32, copy=False)
    m = features.shape[0]
    n = max(1, math.ceil(duration * target_rate - 1e-6))
    ratio = source_rate / target_rate  # source vectors per output vector
    i = np.arange(n, dtype=np.float64)
    nearest = np.clip(np.floor(i * ratio + 0.5), 0, m - 1).astype(np.int64)
    if method == "nearest":
        return features[nearest]
    # Window [lo, hi) of source indices j with (i - 0.5) * ratio <= j < (i + 0.5) * ratio.
    lo = np.clip(np.ceil((i - 0.5) * ratio - 1e-9), 0, m).astype(np.int64)
    hi = np.clip(np.ceil((i + 0.5) * ratio - 1e-9), 0, m).astype(np.int64)
    cumulative = np.concatenate([np.zeros((1, features.shape[1])), np.cumsum(features, axis=0, dtype=np.float64)])
    counts = hi - lo
    pooled = (cumulative[hi] - cumulative[lo]) / np.maximum(counts, 1)[:, None]
    return np.where((counts > 0)[:, None], pooled, features[nearest]).astype(np.float32)
