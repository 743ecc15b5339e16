"""Search video by speech and speech by video: `python -m serving.retrieve --model BASE/NAME --audio q.wav --videos DIR`.

The media are decoded and their features computed by the same code as the
Beam preprocessing job (`preprocessing.extract`, with the preprocessing config
the model's records were made with, which the export carries), rounded
through the records' storage dtype, and cut into clips by the retrieval task's
own `ClipParser` (as it cuts evaluation clips), so the exported AVLnet
(`serving.retrieval`) sees what it was trained on:

  speech   a query audio file (wav, flac, mp3, ogg) or a video's audio track,
           decoded whole at the model's sample rate; cut into windows of the
           model's clip length (`max_audio_frames` log-Mel frames, e.g. 2.56 s),
           overlapping by half a window; each embedded by `embed_audio_log_mel`.
           A query shorter than a clip is one clip.
  video    decoded and embedded a window of the clip length at a time
           (`MediaFeatureExtractor.decode` of that window only, so memory is
           bounded by a window, not the video), windows overlapping by half a
           window by default (`--stride`); each embedded by `embed_video`.

A pair of files scores the best similarity (`score`: the dot products that
training and the retrieval metrics rank by) over all pairs of their windows:
a video is as close to a query as its closest window to the query's closest
window, and that video window is reported with the score.

`--url http://HOST:8501` sends the model calls to a TF Serving endpoint
serving the same export (by `--model-name`, default the export's) instead of
loading it; the export dir is still read for its preprocessing config.

Python:

    from serving.retrieve import Retriever
    retriever = Retriever.load("exports/retriever")        # a version dir or a base of versions
    retriever.rank_videos("query.wav", ["a.mp4", "b.mp4"])  # [(path, score, (start, end)), ...] best first
    retriever.rank_audio("a.mp4", ["q1.wav", "q2.wav"])     # [(path, score), ...] best first
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import tensorflow as tf

from avalign import features
from preprocessing import media
from preprocessing.annotations import MEDIA_EXTENSIONS
from serving import export_base, predict
from serving.predict import PredictError
from trainer.localization.data import window_starts
from trainer.retrieval import data as data_lib

# The signatures of `serving.retrieval` the retriever calls.
SIGNATURES = ("embed_audio_log_mel", "embed_video", "score")
# Clips per model call: bounds a request's size (and a REST body's) on long inputs.
_CLIPS_PER_CALL = 64


class VideoMatch(NamedTuple):
    """A video ranked against a speech query.

    Attributes:
      path: the video file.
      score: the best similarity of any of its windows to the query.
      window: (start, end) seconds of that window.
    """

    path: str
    score: float
    window: tuple


class AudioMatch(NamedTuple):
    """A spoken clip ranked against a video query.

    Attributes:
      path: the audio (or video) file whose speech was scored.
      score: the best similarity of any of its windows to the query video's.
    """

    path: str
    score: float


class Retriever(predict.ExportedModel):
    """An exported AVLnet retrieval model and the preprocessing its records were made with (see `ExportedModel`).

    Raises:
      PredictError: the export is not a retrieval model, or its records' visual
        streams were imported from feature files (which cannot be computed
        from a new video).
    """

    SIGNATURES = SIGNATURES
    KIND = "a retrieval model exported by serving.retrieval"

    def __init__(self, export_dir: str, url: Optional[str] = None, model_name: Optional[str] = None):
        super().__init__(export_dir, url, model_name)
        records, clips = self.params["records"], self.params["clips"]
        self.streams = tuple(records["streams"])
        self.storage_dtype = np.dtype(records["storage_dtype"])
        # Clips cut as the task cuts evaluation clips, each from one span we give it.
        self.parser = data_lib.ClipParser(
            clips["max_audio_frames"],
            clips["audio_rate"],
            self.streams,
            {s: self.schema["streams"][s]["rate"] for s in self.streams},
            images=clips["images"],
            clip_source="captions",
        )

    def visual_streams(self) -> Sequence[str]:
        return self.params["records"]["streams"]

    @property
    def clip_seconds(self) -> float:
        """Seconds of media in one clip: the model's `max_audio_frames` at the records' audio frame rate."""
        return self.parser.max_audio_frames / self.parser.audio_rate

    def _windows(self, duration: float, stride: Optional[float]) -> tuple[np.ndarray, float]:
        """(window starts, window length) covering `duration` seconds with clips of the model's length."""
        window = self.clip_seconds
        stride = float(stride or window / 2.0)
        if not stride > 0:
            raise PredictError(f"stride must be > 0 seconds, got {stride}.")
        return window_starts(duration, window, stride), min(window, duration)

    def _cut(self, log_mel: np.ndarray, streams: dict, spans: Sequence[tuple]) -> dict[str, np.ndarray]:
        """The clips of `spans` (seconds) of one video's features, as the task's parser cuts them."""
        dims = self.params["records"]["dims"]
        video = {
            features.AUDIO: log_mel.astype(self.storage_dtype).astype(np.float32),
            features.AUDIO_PRESENT: np.int64(1),
            features.CAPTION_START: np.array([s for s, _ in spans], np.float32),
            features.CAPTION_END: np.array([e for _, e in spans], np.float32),
            features.VIDEO_ID: "",
            features.LANGUAGE: "",
        }
        for s in self.streams:
            matrix = streams[s].matrix if s in streams else np.zeros([0, dims[s]])
            video[features.stream_keys(s)["features"]] = matrix.astype(self.storage_dtype).astype(np.float32)
        video = {k: tf.constant(v) for k, v in video.items()}
        batch = next(iter(self.parser.clips(video, is_training=False).map(lambda x, meta: x).batch(len(spans))))
        return {k: v.numpy() for k, v in batch.items()}

    def _call(self, signature: str, inputs: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
        """The outputs of `signature` on `inputs`, by name; `what` names the input in a refusal."""
        try:
            out = self._run(signature, inputs)
        except tf.errors.InvalidArgumentError as e:
            raise PredictError(f"{what}: the model refused the input: {export_base.op_error_reason(e)}") from None
        return out

    def embed_speech(self, path: str, stride: Optional[float] = None) -> np.ndarray:
        """The embeddings [windows, E] of the speech in an audio file or a video's audio track.

        Args:
          path: an audio file (wav, flac, mp3, ogg) or a media file with an audio stream.
          stride: seconds between windows (default: half a clip).

        Raises:
          PredictError: the file does not decode, has no audio, or no samples.
        """
        rate = self.preprocess.audio.sample_rate
        try:
            decoded = media.decode_media(path, sample_rate=rate, frame_rate=None)
        except (media.MediaError, OSError) as e:
            raise PredictError(f"{path}: cannot be decoded as audio: {_reason(e)}") from None
        if not decoded.audio_present:
            raise PredictError(f"{path}: has no audio stream; give a file with speech.")
        if not decoded.waveform.size or not decoded.duration > 0:
            raise PredictError(f"{path}: holds no audio samples ({decoded.duration} s); give a file with speech.")
        starts, length = self._windows(float(decoded.duration), stride)
        spans = [(float(t), min(float(t) + length, float(decoded.duration))) for t in starts]
        clips = self._cut(self.extractor.audio_features(decoded), {}, spans)
        out = []
        for i in range(0, len(spans), _CLIPS_PER_CALL):
            inputs = {"log_mel": clips["audio"][i : i + _CLIPS_PER_CALL]}
            inputs["audio_length"] = clips["audio_length"][i : i + _CLIPS_PER_CALL].astype(np.int32)
            out.append(self._call("embed_audio_log_mel", inputs, path)["audio_embedding"])
        return np.concatenate(out)

    def embed_video(
        self,
        path: str,
        start: float = 0.0,
        duration: Optional[float] = None,
        stride: Optional[float] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The embeddings of the windows of a video (or of its range [start, start + duration)).

        Each window is decoded and its features computed on their own, so memory
        is bounded by a window.

        Args:
          path: a video file (mp4, mkv, webm, ...).
          start, duration: the range of the video, seconds (default: all of it).
          stride: seconds between windows (default: half a clip).
          progress: called with (windows done, windows) after each window.

        Returns:
          (embeddings [W, E], windows [W, 2] (start, end) seconds in the video).

        Raises:
          PredictError: the file or the range does not decode, or no window has
            a visual step.
        """
        try:
            total = media.probe_duration(path, frames=self.extractor.needs_frames)
        except (media.MediaError, OSError) as e:
            raise PredictError(f"{path}: cannot be decoded: {_reason(e)}") from None
        if not 0 <= start < total:
            raise PredictError(f"{path}: start={start} s is outside the video's [0, {total:.3f}) s.")
        span = total - start if duration is None else min(float(duration), total - start)
        if not span > 0:
            raise PredictError(f"{path}: the range [{start}, {start + span}) s holds no media; give a duration > 0.")
        starts, length = self._windows(span, stride)
        clips, windows = [], []
        for i, t0 in enumerate(starts + start):
            t0 = float(t0)
            try:
                decoded, seconds = self.extractor.decode(path, start=t0, duration=length)
                log_mel, streams = self.extractor.features(
                    decoded, seconds, os.path.splitext(os.path.basename(path))[0]
                )
            except (media.MediaError, OSError, ValueError, KeyError) as e:
                raise PredictError(
                    f"{path}: cannot be decoded at [{t0:.2f}, {t0 + length:.2f}) s: {_reason(e)}"
                ) from None
            clip = self._cut(log_mel, streams, [(0.0, seconds)])
            if clip["visual_mask"].any():
                clips.append(clip)
                windows.append((t0, t0 + seconds))
            else:
                logging.warning("%s: the window [%.2f, %.2f) s has no visual step; left out", path, t0, t0 + seconds)
            if progress:
                progress(i + 1, len(starts))
        if not clips:
            raise PredictError(f"{path}: no window has visual features (is the video stream empty?).")
        keys = (*self.streams, "visual_mask")
        batch = {k: np.concatenate([c[k] for c in clips]) for k in keys}
        out = []
        for i in range(0, len(clips), _CLIPS_PER_CALL):
            inputs = {k: v[i : i + _CLIPS_PER_CALL] for k, v in batch.items()}
            out.append(self._call("embed_video", inputs, path)["video_embedding"])
        return np.concatenate(out), np.array(windows, np.float64)

    def similarity(self, audio_embedding: np.ndarray, video_embedding: np.ndarray) -> np.ndarray:
        """[N_a, N_v] similarities by the model's `score` signature."""
        inputs = {"audio_embedding": audio_embedding, "video_embedding": video_embedding}
        return self._call("score", inputs, "score")["similarity"]

    def rank_videos(
        self,
        query_audio: str,
        videos: Sequence[str],
        stride: Optional[float] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> list[VideoMatch]:
        """Ranks videos by how well their best window matches the speech of `query_audio`.

        Args:
          query_audio: an audio file or a media file with an audio track.
          videos: video files.
          stride: seconds between video windows (default: half a clip).
          progress: called with (videos done, videos) after each video.

        Returns:
          One `VideoMatch` (path, score, best window) per video, best first.

        Raises:
          PredictError: no video, or a file that does not decode (naming it).
        """
        videos = [str(v) for v in videos]
        if not videos:
            raise PredictError("no video to rank.")
        query = self.embed_speech(query_audio)
        found = []
        for i, path in enumerate(videos):
            emb, windows = self.embed_video(path, stride=stride)
            sim = self.similarity(query, emb).max(axis=0)  # best query window, per video window
            best = int(np.argmax(sim))
            found.append(
                VideoMatch(
                    path, float(sim[best]), (round(float(windows[best, 0]), 3), round(float(windows[best, 1]), 3))
                )
            )
            if progress:
                progress(i + 1, len(videos))
        return sorted(found, key=lambda m: -m.score)

    def rank_audio(
        self,
        query_video: str,
        clips: Sequence[str],
        start: float = 0.0,
        duration: Optional[float] = None,
        stride: Optional[float] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> list[AudioMatch]:
        """Ranks spoken clips by how well they match the video `query_video` (or its range).

        Args:
          query_video: a video file.
          clips: audio files, or media files with an audio track.
          start, duration: the range of the query video, seconds (default: all of it).
          stride: seconds between windows of the video and of each clip (default: half a clip).
          progress: called with (clips done, clips) after each clip.

        Returns:
          One `AudioMatch` (path, score) per clip, best first.

        Raises:
          PredictError: no clip, or a file that does not decode or holds no
            audio (naming it).
        """
        clips = [str(c) for c in clips]
        if not clips:
            raise PredictError("no audio clip to rank.")
        query, _ = self.embed_video(query_video, start, duration, stride)
        found = []
        for i, path in enumerate(clips):
            found.append(AudioMatch(path, float(self.similarity(self.embed_speech(path, stride), query).max())))
            if progress:
                progress(i + 1, len(clips))
        return sorted(found, key=lambda m: -m.score)


def _reason(error: Exception) -> str:
    """Why a file failed to decode, without its path (the caller's message names it)."""
    return error.reason if isinstance(error, media.MediaError) else str(error)


def media_files(paths: Sequence[str], video_only: bool = False) -> list[str]:
    """The media files named, each directory replaced by the media files directly in it (sorted by name).

    Args:
      paths: files and directories.
      video_only: leave audio files (`media.AUDIO_EXTENSIONS`) out of directories.

    Raises:
      PredictError: a path that does not exist, or a directory without a media file.
    """
    extensions = set(MEDIA_EXTENSIONS) - (set(media.AUDIO_EXTENSIONS) if video_only else set())
    found = []
    for path in paths:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if os.path.splitext(n)[1].lower() in extensions)
            names = [os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))]
            if not names:
                raise PredictError(
                    f"{path}: a directory with no media file (looked for {', '.join(sorted(extensions))})."
                )
            found += names
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise PredictError(f"{path}: no such file or directory.")
    return found


def format_matches(query: str, matches: Sequence) -> str:
    """The ranking as a human-readable table."""
    lines = [f"{query}:"]
    for rank, m in enumerate(matches, start=1):
        where = f"   {m.window[0]:8.2f} - {m.window[1]:8.2f} s" if isinstance(m, VideoMatch) else ""
        lines.append(f"  #{rank:<4} score {m.score:9.4f}{where}   {m.path}")
    return "\n".join(lines)


def matches_json(query: str, direction: str, matches: Sequence) -> dict:
    """The ranking as JSON: the query, the direction and each match's fields."""
    return {"query": query, "direction": direction, "matches": [m._asdict() for m in matches]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.retrieve",
        description="Search videos by speech, or speech by video, with an exported AVLnet retrieval model.",
    )
    parser.add_argument("--model", required=True, help="The export: BASE/NAME (latest version) or a version dir.")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--audio", help="A speech query: an audio file or a video's audio track; ranks --videos.")
    query.add_argument("--video", help="A video query (see --start/--duration); ranks --clips.")
    parser.add_argument("--videos", nargs="+", default=[], help="Videos to rank: files and/or directories.")
    parser.add_argument("--clips", nargs="+", default=[], help="Spoken clips to rank: files and/or directories.")
    parser.add_argument("--start", type=float, default=0.0, help="Start (seconds) of the --video query's range.")
    parser.add_argument("--duration", type=float, help="Seconds of the --video query's range (default: to the end).")
    parser.add_argument("--stride", type=float, help="Seconds between windows (default: half the model's clip).")
    parser.add_argument("--url", help="A TF Serving REST endpoint serving the export, e.g. http://localhost:8501.")
    parser.add_argument("--model-name", help="The served model's name with --url (default: the export's).")
    parser.add_argument("--top", type=int, default=10, help="Print the N best (0: all; default 10).")
    parser.add_argument("--json", action="store_true", help="Print the ranking as JSON.")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    if args.audio and (not args.videos or args.clips):
        print("error: --audio ranks --videos: give --videos FILE_OR_DIR ... (and no --clips).", file=sys.stderr)
        return 2
    if args.video and (not args.clips or args.videos):
        print("error: --video ranks --clips: give --clips FILE_OR_DIR ... (and no --videos).", file=sys.stderr)
        return 2
    if args.top < 0:
        print(f"error: --top must be >= 0, got {args.top}.", file=sys.stderr)
        return 2
    query = args.audio or args.video
    if not os.path.isfile(query):
        print(f"error: {'--audio' if args.audio else '--video'} {query}: no such file.", file=sys.stderr)
        return 2

    def progress(done, total):
        print(f"\r{done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    from serving import client

    try:
        retriever = Retriever.load(args.model, url=args.url, model_name=args.model_name)
        if args.audio:
            videos = media_files(args.videos, video_only=retriever.extractor.needs_frames)
            direction, matches = "audio->video", retriever.rank_videos(query, videos, args.stride, progress)
        else:
            clips = media_files(args.clips)
            direction = "video->audio"
            matches = retriever.rank_audio(query, clips, args.start, args.duration, args.stride, progress)
    except (PredictError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except client.ServingError as e:
        print(f"error: the server refused a request: {e}", file=sys.stderr)
        return 1
    matches = matches[: args.top] if args.top else matches
    print(
        json.dumps(matches_json(query, direction, matches), indent=1) if args.json else format_matches(query, matches)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
