"""Training, evaluation and export of avalign models."""
