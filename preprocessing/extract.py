"""One video's features (log-Mel frames and feature streams), computed the one way the job and serving share."""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from avalign import audio, features
from preprocessing import imported, media, visual
from preprocessing.config import PreprocessConfig


class Stream(NamedTuple):
    """One feature stream of a video, stored beside its log-Mel frames.

    Attributes:
      matrix: float (T, dim) features.
      rate: rows per second of `matrix`.
      extractor: what computed it, stored in the record (e.g. "builtin_2d:1",
        "hub:<handle>", "imported:npy:...").
    """

    matrix: np.ndarray
    rate: float
    extractor: str


class EmptyMediaError(media.MediaError):
    """Media that decodes to no time at all."""


class MediaFeatureExtractor:
    """Decodes a media file and computes its features as the preprocessing job stores them.

    Building one loads what the config names: the visual extractors (their
    models), the hub audio embedding and the sources of imported features; it is
    meant to be built once per worker (a DoFn's `setup`, a predictor's start) and
    then used for many files.
    """

    def __init__(self, cfg: PreprocessConfig):
        """Builds the extractors, the audio embedding and the imported sources `cfg` names.

        Args:
          cfg: the preprocessing config.

        Raises:
          ValueError: a visual extractor or an imported source is misconfigured.
          OSError: an imported source's path cannot be read.
        """
        self._cfg = cfg
        self._stream_cfgs = {"visual_2d": cfg.visual.stream_2d, "visual_3d": cfg.visual.stream_3d}
        self._extractors = {}
        self._imported = {}
        imports = {"visual_2d": cfg.imported_2d, "visual_3d": cfg.imported_3d}
        for name, stream_cfg in self._stream_cfgs.items():
            imported_cfg = imports[name]
            if imported_cfg.kind == "npy":
                self._imported[name] = imported.NpyFeatureSource(imported_cfg.path, imported_cfg.rate)
            elif imported_cfg.kind == "hdf5":
                key = imported_cfg.dataset_key or None
                self._imported[name] = imported.Hdf5FeatureSource(imported_cfg.path, imported_cfg.rate, key)
            elif stream_cfg.extractor:
                self._extractors[name] = visual.get_extractor(stream_cfg)
        self._audio_embedding = None
        if cfg.audio_embedding.handle:
            from preprocessing import audio_embedding

            emb = cfg.audio_embedding
            self._audio_embedding = audio_embedding.HubAudioEmbedding(
                emb.handle, emb.key(), emb.hop_seconds, cfg.audio.sample_rate
            )

    @property
    def needs_frames(self) -> bool:
        """Whether a visual stream is extracted from frames (else only the audio is decoded)."""
        return bool(self._extractors)

    @property
    def config(self) -> PreprocessConfig:
        """The preprocessing config the features follow."""
        return self._cfg

    def no_video_reason(self) -> str:
        """Why a file without a video stream cannot be used, and what to do instead."""
        streams = ", ".join(f"{s} ({self._stream_cfgs[s].extractor})" for s in sorted(self._extractors))
        return (
            f"no video stream; this job needs visual features, extracted from frames for {streams}. "
            "Give this video's visual features as imported ones (imported_2d / imported_3d), "
            "or set those streams' extractor to '' to write audio-only records"
        )

    def decode(
        self, path: str, start: float = 0.0, duration: Optional[float] = None
    ) -> tuple[media.DecodedMedia, float]:
        """Decodes the audio, and the frames when an extractor needs them, of a file or a range of it.

        With imported (or no) visual streams no frame is decoded, so an audio-only
        input is usable. With the default range the file is decoded whole, as the
        job does; otherwise only [start, start + duration) is (`media.decode_window`),
        its frames and samples those of the whole decode.

        Args:
          path: local media file.
          start: seconds from the media's origin.
          duration: seconds of the range; None decodes to the end.

        Returns:
          (the decoded media, its duration in seconds, > 0).

        Raises:
          media.NoVideoStreamError: frames are needed and the file has no video
            stream; its `reason` is `no_video_reason()`.
          EmptyMediaError: the media lasts no time.
          media.MediaError: the file cannot be decoded (missing, not media,
            truncated, `start` past its end, ...).
          ValueError: `start` or `duration` is out of range.
          OSError: the file cannot be read.
        """
        cfg = self._cfg
        need_frames = self.needs_frames
        if need_frames and media.is_audio_file(path):
            raise media.NoVideoStreamError(path, self.no_video_reason())
        try:
            decoded = media.decode_media(
                path,
                sample_rate=cfg.audio.sample_rate,
                frame_rate=cfg.decode_frame_rate if need_frames else None,
                max_side=cfg.max_side or None,
                start=start,
                duration=duration,
            )
        except media.NoVideoStreamError as e:
            raise media.NoVideoStreamError(path, self.no_video_reason()) from e
        seconds = float(decoded.duration)
        if not seconds > 0:
            raise EmptyMediaError(path, f"decoded duration is {seconds}")
        return decoded, seconds

    def audio_features(self, decoded: media.DecodedMedia) -> np.ndarray:
        """The log-Mel frames, float32 (T, num_mel_bins), of the waveform (silence when there is no audio)."""
        return audio.compute_log_mel_numpy(decoded.waveform, self._cfg.audio)

    def feature_streams(self, decoded: media.DecodedMedia, duration: float, video_id: str) -> dict[str, Stream]:
        """The streams stored beside the log-Mel frames: visual ones and the hub audio embedding.

        The order is extracted visual streams, the audio embedding, imported
        visual streams: a record's features are serialized in this order, so
        it must not change for records to stay byte-identical across runs.

        Args:
          decoded: the decoded media (`decode`).
          duration: its duration in seconds.
          video_id: the video's id, which names its imported feature files.

        Returns:
          Stream name -> Stream.

        Raises:
          ValueError, KeyError, OSError: an extractor or imported source refuses
            the video (e.g. no feature file for `video_id`).
        """
        streams = {}
        for name, extractor in self._extractors.items():
            matrix = extractor.extract(decoded.frames, decoded.frame_rate, duration)
            streams[name] = Stream(matrix, self._stream_cfgs[name].rate, f"{extractor.name}:{extractor.version}")
        if self._audio_embedding is not None:
            matrix, rate = self._audio_embedding(decoded.waveform)
            streams[features.AUDIO_EMBEDDING] = Stream(matrix, rate, f"hub:{self._cfg.audio_embedding.handle}")
        for name, source in self._imported.items():
            rate = self._stream_cfgs[name].rate
            matrix = imported.resample_features(source.load(video_id), source.rate, rate, duration)
            streams[name] = Stream(matrix, rate, f"imported:{source.version}")
        return streams

    def features(
        self, decoded: media.DecodedMedia, duration: float, video_id: str
    ) -> tuple[np.ndarray, dict[str, Stream]]:
        """The log-Mel frames and the feature streams of decoded media, as a record stores them.

        Args:
          decoded: the decoded media (`decode`).
          duration: its duration in seconds.
          video_id: the video's id, which names its imported feature files.

        Returns:
          (log-Mel float32 (T, num_mel_bins), stream name -> Stream).

        Raises:
          ValueError, KeyError, OSError: as `feature_streams`.
        """
        return self.audio_features(decoded), self.feature_streams(decoded, duration, video_id)
