"""Annotation readers: every supported format -> VideoAnnotation records and Rejected dead letters.

A module per format (charades_sta, activitynet, youcook2, qvhighlights,
howto100m, builtin) documents its file and registers its reader in `registry`,
whose READERS maps the format names to the readers and whose read_annotations
dispatches on them. `validation` holds the policy that every reader applies,
`entries` and `files` the machinery they share, `paths` the confinement of
media paths, and `check` the job's pre-flight check of its file.
"""

# Importing a format module registers its reader.
from preprocessing.annotations.activitynet import read_activitynet
from preprocessing.annotations.builtin import read_builtin
from preprocessing.annotations.charades_sta import read_charades_sta
from preprocessing.annotations.check import check_annotations
from preprocessing.annotations.howto100m import read_howto100m
from preprocessing.annotations.paths import MEDIA_EXTENSIONS, confine_path, resolve_media_path
from preprocessing.annotations.qvhighlights import read_qvhighlights
from preprocessing.annotations.registry import READERS, guess_format, read_annotations, register_format
from preprocessing.annotations.validation import DEFAULT_MAX_OVERSHOOT, REJECT_KINDS, STAGE, Item, ReadStats
from preprocessing.annotations.youcook2 import read_youcook2

__all__ = [
    "DEFAULT_MAX_OVERSHOOT",
    "MEDIA_EXTENSIONS",
    "READERS",
    "REJECT_KINDS",
    "STAGE",
    "Item",
    "ReadStats",
    "check_annotations",
    "confine_path",
    "guess_format",
    "read_activitynet",
    "read_annotations",
    "read_builtin",
    "read_charades_sta",
    "read_howto100m",
    "read_qvhighlights",
    "read_youcook2",
    "register_format",
    "resolve_media_path",
]
