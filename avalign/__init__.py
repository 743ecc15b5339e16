"""The core every layer builds on: configs, the feature schema and record I/O, the audio front-end, files and export dirs.

Layers import one way (tests/test_layers.py checks it): avalign (core) -> preprocessing,
corpus -> trainer -> serving -> apps, bench, kubeflow.
"""

__version__ = "0.1.0"
