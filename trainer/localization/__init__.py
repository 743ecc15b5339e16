"""Caption localization task: the MALTA / ABLR co-attention model, its text handling, losses and metrics."""
