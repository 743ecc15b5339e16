"""Raw videos and annotations -> TFRecords of audio spectrograms and visual features."""
