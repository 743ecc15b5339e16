"""Cross-cutting machinery shared by preprocessing, trainer and serving."""

__version__ = "0.1.0"
