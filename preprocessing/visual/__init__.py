"""Pluggable visual feature extractors, chosen by name from a `VisualStreamConfig`.

The contract, the registry and the sampling in time are in `base`; each registered
extractor has its own module, imported here so that it registers:

- ``builtin_2d`` (`builtin_2d`): weight-free appearance features per frame.
- ``builtin_3d`` (`builtin_3d`): weight-free motion features per clip.
- ``hub`` (`hub`): a frozen TF Hub / SavedModel image or video model.
- ``keras_app`` (`keras_app`): a `keras.applications` backbone with a local weights file.

The two built-ins share their per-frame analysis (`builtin_analysis`).
"""

from preprocessing.visual.base import (
    FeatureExtractor,
    clip_indices,
    frame_indices,
    get_extractor,
    num_vectors,
    register_extractor,
    registered_extractors,
    resize_frames,
    validate_frames,
)
from preprocessing.visual.builtin_2d import BUILTIN_2D_DIM, BUILTIN_2D_LAYOUT, BUILTIN_2D_SLICES, Builtin2DExtractor
from preprocessing.visual.builtin_3d import BUILTIN_3D_DIM, BUILTIN_3D_LAYOUT, BUILTIN_3D_SLICES, Builtin3DExtractor
from preprocessing.visual.hub import HubExtractor
from preprocessing.visual.keras_app import KerasAppExtractor

__all__ = [
    "BUILTIN_2D_DIM",
    "BUILTIN_2D_LAYOUT",
    "BUILTIN_2D_SLICES",
    "BUILTIN_3D_DIM",
    "BUILTIN_3D_LAYOUT",
    "BUILTIN_3D_SLICES",
    "Builtin2DExtractor",
    "Builtin3DExtractor",
    "FeatureExtractor",
    "HubExtractor",
    "KerasAppExtractor",
    "clip_indices",
    "frame_indices",
    "get_extractor",
    "num_vectors",
    "register_extractor",
    "registered_extractors",
    "resize_frames",
    "validate_frames",
]
