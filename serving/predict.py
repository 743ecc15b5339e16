"""From your own video to moments: `python -m serving.predict --model BASE/NAME --video my.mp4 --caption "..."`.

The video is decoded and its features computed by the same code as the Beam
preprocessing job (`preprocessing.extract`, with the preprocessing config the
model's records were made with, which the export carries), the exported
model localizes each caption, and the top spans are printed in seconds with
their scores; `--plot` writes a PNG of both attention curves over time with
the predicted spans.

Any length: a video longer than the model's window (its job's
`eval.window_seconds`, else its longest training video) is decoded and
localized a window at a time (overlapping by half a window by default), so
memory is bounded by the window, not the video; each caption's per-window
spans are merged by the attention mass each window's model put inside its
span (`trainer.localization.data.merge_windows`), and the proposals of all
windows are ranked together after temporal NMS.

Retrieval: `--audio query.wav --videos DIR` ranks the videos in DIR by the
spoken query, and `--video my.mp4 --clips DIR` ranks spoken clips by the
video (`serving.retrieve`, with a retrieval export as `--model`).

`--url http://HOST:8501` sends the model calls to a TF Serving endpoint
serving the same export (by `--model-name`, default the export's) instead of
loading it; the export dir is still read for its preprocessing config.

Python:

    from serving.predict import Localizer
    localizer = Localizer.load("exports/localizer")        # a version dir or a base of versions
    result = localizer.localize("my.mp4", ["cut the paper"])
    result.captions[0].start_seconds, result.captions[0].proposals
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from avalign import export_util, hyperparams
from preprocessing import media
from serving import export_base
from trainer.localization import data as data_lib
from trainer.localization import metrics

SCHEMA_ASSET = "schema.json"


class PredictError(ValueError):
    """A video, caption or model the predictor cannot use; the message names it."""


@dataclasses.dataclass
class CaptionResult:
    """Where one caption happens in a video.

    Attributes:
      caption: the caption.
      start_seconds, end_seconds: the predicted span.
      score: its attention mass (0..1: how much of its window's attention lies inside it).
      proposals: up to K (start_seconds, end_seconds, score), best first, distinct by temporal NMS.
      window: (start, end) seconds of the window the span came from.
    """

    caption: str
    start_seconds: float
    end_seconds: float
    score: float
    proposals: list
    window: tuple


@dataclasses.dataclass
class LocalizationResult:
    """The captions of one video localized, with the attention curves to draw.

    Attributes:
      video: the video's path.
      duration: its duration in seconds.
      captions: one `CaptionResult` per caption, in the order given.
      windows: [K, 2] window (start, end) seconds.
      attention: [num captions, K, M, 2] each window's video and audio attention.
    """

    video: str
    duration: float
    captions: list
    windows: np.ndarray
    attention: np.ndarray

    def to_json(self) -> dict:
        return {
            "video": self.video,
            "duration": round(self.duration, 3),
            "windows": len(self.windows),
            "captions": [dataclasses.asdict(c) for c in self.captions],
        }


def resolve_export(path: str) -> str:
    """The version dir of `path`: itself when it holds a SavedModel, else its latest integer version.

    Raises:
      PredictError: neither.
    """
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    try:
        return export_util.latest_version_dir(path)
    except FileNotFoundError as e:
        raise PredictError(f"{path}: neither a SavedModel nor a base of versions ({e})") from None


def read_preprocess(export_dir: str, streams: Sequence[str]):
    """(records schema, PreprocessConfig) an export's records were made with, to extract the same features.

    Raises:
      PredictError: one of the model's visual `streams` was imported from
        feature files, which cannot be computed from a new video.
    """
    from preprocessing.config import PreprocessConfig

    with tf.io.gfile.GFile(os.path.join(export_dir, export_base.METADATA_DIR, SCHEMA_ASSET)) as f:
        schema = json.load(f)
    preprocess = hyperparams.from_dict(PreprocessConfig, schema["config"])
    imported = [s for s in streams if getattr(preprocess, f"imported_{s[-2:]}").kind]
    if imported:
        raise PredictError(
            f"{export_dir}: the model's visual streams {imported} were imported from feature files when its "
            "records were made; features can only be computed here from what a video holds."
        )
    return schema, preprocess


def runner(export_dir: str, metadata: Mapping, url: Optional[str] = None, model_name: Optional[str] = None) -> Callable:
    """A function (signature, inputs) -> outputs by name: the loaded export's, or a TF Serving endpoint's.

    With `url`, the served model is `model_name`, else the name the export was written under.
    """
    if url:
        return _rest_runner(url, model_name or metadata.get("metadata", {}).get("model_name") or "", metadata)
    loaded = tf.saved_model.load(export_dir)

    def run(signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in out.items()}

    return run


def _rest_runner(url: str, model_name: str, metadata: Mapping) -> Callable:
    from serving import client

    if not model_name:
        raise PredictError("give the served model's name (--model-name): the export does not record one.")
    server = client.ServingClient(url, model_name)

    def run(signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = list(metadata["signatures"][signature]["outputs"])
        # TF Serving's answer leaves a signature's single output unnamed.
        single = outputs[0] if len(outputs) == 1 else None
        try:
            return server.predict(dict(inputs), signature_name=signature, output_name=single)
        except client.ServingError as e:
            raise PredictError(f"{url}: the server refused the request: {e}") from None

    return run


class ExportedModel:
    """An export, its params and the preprocessing its records were made with, called locally or over REST.

    Subclasses name the signatures they need (`SIGNATURES`), what they are
    (`KIND`, for errors) and the visual streams their features come from.

    Args:
      export_dir: the export's version dir.
      url: a TF Serving REST endpoint serving the export (calls go there instead
        of to a loaded copy).
      model_name: the served model's name (default: the export's).

    Raises:
      PredictError: the export lacks a signature the subclass needs, or its
        visual streams were imported from feature files (see `read_preprocess`).
    """

    SIGNATURES: tuple = ()
    KIND = "model"

    def __init__(self, export_dir: str, url: Optional[str] = None, model_name: Optional[str] = None):
        self.export_dir = export_dir
        self.metadata = export_base.read_metadata(export_dir)
        missing = [s for s in self.SIGNATURES if s not in self.metadata["signatures"]]
        if missing:
            task = self.metadata.get("metadata", {}).get("task", "?")
            raise PredictError(
                f"{export_dir} has no {', '.join(map(repr, missing))} signature(s) (task {task!r}, signatures "
                f"{sorted(self.metadata['signatures'])}): not {self.KIND}."
            )
        self.params = self.metadata["params"]
        self.schema, self.preprocess = read_preprocess(export_dir, self.visual_streams())
        self._run = runner(export_dir, self.metadata, url, model_name)
        self._extractor = None

    def visual_streams(self) -> Sequence[str]:
        """The visual streams the model's features come from (in `self.params`)."""
        raise NotImplementedError

    @classmethod
    def load(cls, path: str, url: Optional[str] = None, model_name: Optional[str] = None):
        """The model of a version dir or of a base of integer versions (the latest)."""
        return cls(resolve_export(path), url=url, model_name=model_name)

    @property
    def extractor(self):
        """The preprocessing job's feature extractor, built on first use (it may load visual models)."""
        if self._extractor is None:
            from preprocessing import extract

            self._extractor = extract.MediaFeatureExtractor(self.preprocess)
        return self._extractor


class Localizer(ExportedModel):
    """An exported localizer and the preprocessing its records were made with (see `ExportedModel`)."""

    SIGNATURES = ("localize",)
    KIND = "a localizer that takes audio frames"

    def __init__(self, export_dir: str, url: Optional[str] = None, model_name: Optional[str] = None):
        super().__init__(export_dir, url, model_name)
        self.spec = self.params

    def visual_streams(self) -> Sequence[str]:
        return self.params["visual_streams"]

    def window_starts(self, duration: float, window: Optional[float] = None, stride: Optional[float] = None):
        """(window starts, window length) for a video of `duration` seconds."""
        window = float(window or self.spec["window_seconds"] or duration)
        stride = float(stride or self.spec["window_stride_seconds"] or window / 2.0)
        if window <= 0 or stride <= 0:
            raise PredictError(f"window ({window}) and stride ({stride}) must be > 0 seconds.")
        return data_lib.window_starts(duration, window, stride), min(window, duration)

    def localize(
        self,
        video: str,
        captions: Sequence[str],
        window: Optional[float] = None,
        stride: Optional[float] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> LocalizationResult:
        """Localizes `captions` in the video file `video`.

        Args:
          video: a media file PyAV reads (mp4, mkv, webm, ...).
          captions: the captions, each with a word the model knows.
          window, stride: seconds (default: the export's).
          progress: called with (windows done, windows) after each window.

        Raises:
          PredictError: no caption, an empty one, or a video that does not decode
            (naming it and why).
        """
        captions = [str(c) for c in captions]
        if not captions:
            raise PredictError("no caption given.")
        empty = [i for i, c in enumerate(captions) if not c.strip()]
        if empty:
            raise PredictError(f"caption {empty[0] + 1} of {len(captions)} is empty.")
        try:
            duration = media.probe_duration(video, frames=self.extractor.needs_frames)
        except (media.MediaError, OSError) as e:
            raise PredictError(f"{video}: cannot be decoded: {e}") from None
        if not duration > 0:
            raise PredictError(f"{video}: decodes to {duration} seconds of media.")
        starts, length = self.window_starts(duration, window, stride)
        n, k = len(captions), len(starts)
        spans, attention, proposals, proposal_scores = [], [], [], []
        for i, t0 in enumerate(starts):
            out = self._window(video, float(t0), length, captions)
            spans.append(np.stack([out["start"], out["end"]], axis=-1))
            attention.append(np.stack([out["video_attention"], out["audio_attention"]], axis=-1))
            proposals.append(out["proposals_seconds"] + float(t0))
            proposal_scores.append(out["proposal_scores"])
            if progress:
                progress(i + 1, k)
        spans = np.stack(spans, axis=1)  # [n, K, 2]
        attention = np.stack(attention, axis=1)  # [n, K, M, 2]
        proposals = np.stack(proposals, axis=1)  # [n, K, top, 2]
        proposal_scores = np.stack(proposal_scores, axis=1)
        results = []
        for c in range(n):
            span, score, best = data_lib.merge_windows(starts, length, spans[c], attention[c], duration)
            results.append(
                CaptionResult(
                    caption=captions[c],
                    start_seconds=round(float(span[0] * duration), 3),
                    end_seconds=round(float(span[1] * duration), 3),
                    score=round(score, 4),
                    proposals=self._merge_proposals(spans[c], attention[c], proposals[c], proposal_scores[c]),
                    window=(round(float(starts[best]), 3), round(float(starts[best] + length), 3)),
                )
            )
        windows = np.stack([starts, starts + length], axis=1)
        return LocalizationResult(video, duration, results, windows, attention)

    def _window(self, video: str, start: float, length: float, captions: Sequence[str]) -> dict[str, np.ndarray]:
        """The model's outputs for every caption on one window of the video."""
        try:
            decoded, seconds = self.extractor.decode(video, start=start, duration=length)
        except (media.MediaError, OSError, ValueError) as e:
            raise PredictError(f"{video}: cannot be decoded at [{start:.2f}, {start + length:.2f}) s: {e}") from None
        log_mel, streams = self.extractor.features(decoded, seconds, os.path.splitext(os.path.basename(video))[0])
        storage = np.dtype(self.schema.get("storage_dtype", "float32"))
        m = int(self.spec["num_segments"])
        # As the records store them, then as the trainer segments them.
        visual = [
            data_lib.segment_means(
                streams[s].matrix.astype(storage).astype(np.float32), self.spec["stream_rates"][s], seconds, m
            )
            for s in self.spec["visual_streams"]
        ]
        n = len(captions)
        inputs = {
            "captions": np.array(captions, dtype=object),
            "video": np.repeat(tf.concat(visual, axis=-1).numpy()[None], n, axis=0),
            "log_mel": np.repeat(log_mel.astype(storage).astype(np.float32)[None], n, axis=0),
            "segment_mask": np.ones([n, m], np.float32),
            "duration": np.full([n], seconds, np.float32),
        }
        try:
            return self._run("localize", inputs)
        except tf.errors.InvalidArgumentError as e:
            reason = export_base.op_error_reason(e)
            if "no word the model knows" in reason and self.spec["caption_field"] == "text_en":
                reason += " (the model was trained on English captions: data.caption_field=text_en)"
            raise PredictError(f"the model refused the input: {reason}") from None

    def _merge_proposals(self, spans, attention, proposals, scores) -> list:
        """The K best distinct proposals over all windows: each scored by its window's confidence × its own."""
        window_conf = _span_scores(spans, attention)  # [K]
        flat = proposals.reshape(-1, 2)
        weight = np.where(scores >= 0, scores * window_conf[:, None], -1.0).reshape(-1)
        valid = weight >= 0
        if not valid.any():
            return []
        flat, weight = flat[valid], weight[valid]
        keep = metrics.temporal_nms(flat, weight, float(self.spec["nms_iou"]), int(self.spec["top_k"]))
        return [(round(float(flat[i, 0]), 3), round(float(flat[i, 1]), 3), round(float(weight[i]), 4)) for i in keep]


def _span_scores(spans, attention) -> np.ndarray:
    from trainer.localization import decoding

    return decoding.span_mass(attention, spans).numpy()


def plot(result: LocalizationResult, path: str, caption_index: int = 0, truth: Optional[tuple] = None) -> str:
    """A PNG of one caption's video and audio attention over time, with its span, proposals and (given) true span."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result.captions[caption_index]
    att = result.attention[caption_index]  # [K, M, 2]
    m = att.shape[1]
    fig, ax = plt.subplots(figsize=(10, 3.2))
    for w, (t0, t1) in enumerate(result.windows):
        times = t0 + (np.arange(m) + 0.5) * (t1 - t0) / m
        ax.plot(times, att[w, :, 0], color="tab:blue", lw=1.2, label="video attention" if w == 0 else None)
        ax.plot(times, att[w, :, 1], color="tab:orange", lw=1.2, label="audio attention" if w == 0 else None)
    for j, (s, e, _) in enumerate(c.proposals[1:], start=2):
        ax.axvspan(s, e, color="grey", alpha=0.12, label="other proposals" if j == 2 else None)
    ax.axvspan(c.start_seconds, c.end_seconds, color="tab:red", alpha=0.25, label=f"predicted ({c.score:.2f})")
    if truth is not None:
        ax.axvspan(truth[0], truth[1], ymax=0.08, color="tab:green", alpha=0.8, label="true segment")
    ax.set_xlim(0, result.duration)
    ax.set_xlabel("seconds")
    ax.set_ylabel("attention")
    ax.set_title(f"{os.path.basename(result.video)}: {c.caption!r}", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    tf.io.gfile.makedirs(os.path.dirname(os.path.abspath(path)))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_result(result: LocalizationResult) -> str:
    """The spans as a human-readable table."""
    lines = [f"{result.video}: {result.duration:.1f} s, {len(result.windows)} window(s)"]
    for c in result.captions:
        lines.append(f"  {c.caption!r}")
        lines.append(f"    best      {c.start_seconds:8.2f} - {c.end_seconds:8.2f} s   score {c.score:.3f}")
        for rank, (s, e, score) in enumerate(c.proposals, start=1):
            lines.append(f"    #{rank:<8} {s:8.2f} - {e:8.2f} s   score {score:.3f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.predict",
        description="Find where captions happen in your own video with an exported localizer.",
    )
    parser.add_argument("--model", required=True, help="The export: BASE/NAME (latest version) or a version dir.")
    parser.add_argument("--video", required=True, help="A media file (mp4, mkv, webm, ...), any length.")
    parser.add_argument("--caption", action="append", default=[], help="A caption to localize (repeatable).")
    parser.add_argument("--captions", help="A UTF-8 file of captions, one a line.")
    parser.add_argument("--url", help="A TF Serving REST endpoint serving the export, e.g. http://localhost:8501.")
    parser.add_argument("--model-name", help="The served model's name with --url (default: the export's).")
    parser.add_argument("--window", type=float, help="Window seconds for long videos (default: the export's).")
    parser.add_argument("--stride", type=float, help="Window stride seconds (default: half a window).")
    parser.add_argument("--plot", help="Write a PNG of the first caption's attention over time here.")
    parser.add_argument("--json", action="store_true", help="Print the result as JSON.")
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a.split("=", 1)[0] in ("--audio", "--videos", "--clips") for a in argv):
        # Retrieval: speech -> videos, or a video -> spoken clips.
        from serving import retrieve

        return retrieve.main(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    captions = list(args.caption)
    if args.captions:
        try:
            with open(args.captions, encoding="utf-8") as f:
                captions += [line.strip() for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            print(f"error: --captions {args.captions}: {e}", file=sys.stderr)
            return 2
    if not captions:
        print("error: give at least one --caption or a --captions file.", file=sys.stderr)
        return 2
    if not os.path.exists(args.video):
        print(f"error: --video {args.video}: no such file.", file=sys.stderr)
        return 2

    def progress(done, total):
        if total > 1:
            print(f"\rwindow {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    try:
        localizer = Localizer.load(args.model, url=args.url, model_name=args.model_name)
        result = localizer.localize(args.video, captions, args.window, args.stride, progress=progress)
    except (PredictError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_json(), indent=1, ensure_ascii=False) if args.json else format_result(result))
    if args.plot:
        print(f"wrote {plot(result, args.plot)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
