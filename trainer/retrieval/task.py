"""The audio-visual retrieval task (AVLnet) for the generic trainer."""

from __future__ import annotations

import dataclasses
import io
import logging
import os

import keras
import numpy as np
import tensorflow as tf

from trainer import input as input_lib
from trainer.base_task import Task, records_facts
from trainer.registry import register_task
from trainer.retrieval import data as data_lib
from trainer.retrieval import metrics
from trainer.retrieval import model as model_lib
from trainer.retrieval.config import RetrievalConfig


def embed(model: keras.Model, ds: tf.data.Dataset):
    """Audio and video embeddings, with their metadata, of the usable clips of a batched dataset.

    A clip is usable when the model's `valid` output flags it: it has audio, at
    least one valid audio frame and visual step, and no NaN/Inf in its inputs.
    The others are left out, as the loss leaves them out, so every kept clip is
    both a query and an item.

    Args:
      model: an AVLnet model.
      ds: batches of (features, meta) elements, meta holding `data.META_KEYS`.

    Returns:
      (audio [N, E], video [N, E], meta {key: [N]}) of the N usable clips, in
      dataset order.

    Raises:
      RecordsError: the dataset has no clip, or no usable one.
    """
    audio, video, meta = [], [], {k: [] for k in data_lib.META_KEYS}
    seen = 0
    for x, m in ds:
        out = model(x, training=False)
        # `valid` is exactly 0.0 or 1.0 (PairValidity casts a bool); > 0 is the
        # test the loss applies to the same output, so the two agree on every clip.
        keep = np.asarray(out[model_lib.VALID]) > 0
        seen += keep.size
        audio.append(np.asarray(out[model_lib.AUDIO_EMBEDDING])[keep])
        video.append(np.asarray(out[model_lib.VIDEO_EMBEDDING])[keep])
        for k in meta:
            meta[k].append(m[k].numpy()[keep])
    if not seen:
        raise input_lib.RecordsError("No clips to embed: the split or language filter left nothing.")
    audio, video = np.concatenate(audio), np.concatenate(video)
    if not len(audio):
        raise input_lib.RecordsError(
            f"None of the {seen} clips is usable (each lacks audio or visual steps, or holds NaN/Inf): "
            "check the records' audio_present flags and features."
        )
    return audio, video, {k: np.concatenate(v) for k, v in meta.items()}


def _flatten(result: dict) -> dict:
    return {f"{d}_{k}": v for d, r in result.items() for k, v in r.items()}


class RetrievalMetricsCallback(keras.callbacks.Callback):
    """Validation R@1/5/10 both ways at each epoch end, into the logs, plus a similarity picture."""

    def __init__(self, dataset: tf.data.Dataset, log_dir: str, block_size: int):
        super().__init__()
        self.dataset = dataset
        self.log_dir = log_dir
        self.block_size = block_size
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        a, v, _ = embed(self.model, self.dataset)
        result = metrics.both_directions(a, v, block_size=self.block_size)
        flat = {f"val_{k}": float(x) for k, x in _flatten(result).items()}
        flat["val_r1_mean"] = (result["a2v"]["r1"] + result["v2a"]["r1"]) / 2.0
        if logs is not None:
            logs.update(flat)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            tf.summary.image("similarity_audio_rows_video_cols", similarity_image(a[:48], v[:48]), step=epoch)
        self._writer.flush()


def similarity_image(a: np.ndarray, v: np.ndarray) -> tf.Tensor:
    """The audio×video similarity matrix as a [1, H, W, 4] image (diagonal = true pairs)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    sim = a @ v.T
    fig, ax = plt.subplots(figsize=(3.2, 3), dpi=80)
    im = ax.imshow(sim, cmap="viridis")
    ax.set_xlabel("video clip")
    ax.set_ylabel("audio clip")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return tf.image.decode_png(buf.getvalue(), channels=4)[None]


@register_task(RetrievalConfig)
class RetrievalTask(Task):
    """Learn audio↔video embeddings from narrated clips; retrieve in both directions."""

    def prepare(self, from_job: bool = False) -> None:
        cfg = self.cfg
        self.from_job = from_job
        self.info = input_lib.RecordsInfo(cfg.data.records_dir)
        self.streams = None
        self.model_cfg = None
        self._validate_streams(self._streams_of(cfg.model))

    @staticmethod
    def _streams_of(mcfg) -> tuple:
        """The visual streams a model config reads (the image mode reads 2D features only)."""
        return ("visual_2d", "visual_3d") if mcfg.use_3d else ("visual_2d",)

    def _validate_streams(self, streams: tuple) -> None:
        """Checks and counts every split's records for `streams` (once per set of streams)."""
        cfg = self.cfg
        self.info.check_streams(streams)
        self.counts = {}
        for split in (cfg.data.train_split, cfg.data.eval_split, cfg.data.test_split):
            self.counts[split] = input_lib.validate_records(self.info, split, streams, cfg.data.on_bad_record)
            logging.info("Split %s: %s", split, self.counts[split])
        self.streams = streams

    def configure(self, cfg=None):
        self._replace_config(cfg)
        cfg = self.cfg
        mcfg = cfg.model
        if self._streams_of(mcfg) != self.streams:
            self._validate_streams(self._streams_of(mcfg))
        dims = {"num_mel_bins": self.info.audio_dim, "visual_2d_dim": self.info.stream_dims["visual_2d"]}
        if mcfg.use_3d:
            dims["visual_3d_dim"] = self.info.stream_dims["visual_3d"]
        for name, have in dims.items():
            want = getattr(mcfg, name)
            if want and want != have:
                raise input_lib.RecordsError(
                    f"model.{name}={want} but the records in {cfg.data.records_dir} give {have}; "
                    f"set it to {have} or 0 to take it from the records."
                )
        self.model_cfg = dataclasses.replace(mcfg, **dims)
        facts = {
            "records_dir": cfg.data.records_dir,
            "config": {"model.use_3d": mcfg.use_3d},
            "records": records_facts(self.info, self.streams),
            "model": {f"model.{name}": value for name, value in dims.items()},
        }
        if self.from_job:
            self.job_facts(facts)
        else:
            self.record_facts(facts)
        self.parser = data_lib.ClipParser(
            mcfg.max_audio_frames,
            self.info.audio_rate,
            self.streams,
            self.info.stream_rates,
            images=not mcfg.use_3d,
            clip_source=cfg.data.clip_source,
            window_seconds=cfg.data.window_seconds,
        )
        return self.model_cfg

    def _clips(self, split: str, is_training: bool) -> tf.data.Dataset:
        cfg = self.cfg
        videos = input_lib.read_split(self.info, cfg.data, split, self.streams)
        if cfg.data.cache:
            videos = videos.cache()
        return videos.flat_map(lambda v: self.parser.clips(v, is_training))

    def build_model(self) -> keras.Model:
        if self.model_cfg is None:
            self.configure()
        return model_lib.build_model(self.model_cfg)

    def compile(self, model, optimizer) -> None:
        model.compile(optimizer=optimizer, run_eagerly=self.cfg.runtime.run_eagerly)

    def dataset(self, split: str, is_training: bool, batch_size: int) -> tf.data.Dataset:
        ds = self._clips(split, is_training).map(lambda x, meta: x)
        if is_training:
            ds = ds.shuffle(self.cfg.data.shuffle_buffer, seed=self.cfg.train.seed, reshuffle_each_iteration=True)
        # Contrastive batches: a full batch always, in training.
        ds = ds.batch(batch_size, drop_remainder=is_training)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return ds.prefetch(tf.data.AUTOTUNE).with_options(options)

    def num_examples(self, split: str) -> int:
        return int(self._clips(split, False).reduce(0, lambda n, _: n + 1))

    @property
    def monitor(self):
        return "val_r1_mean", "max"

    def tuning_objectives(self) -> dict[str, str]:
        names = {"val_loss": "min", "val_r1_mean": "max"}
        for prefix in ("val", "eval"):
            for d in ("a2v", "v2a"):
                names.update({f"{prefix}_{d}_r{k}": "max" for k in metrics.RECALL_AT})
                names.update({f"{prefix}_{d}_{r}": "min" for r in ("median_rank", "mean_rank")})
        return names

    def _eval_clips(self, split: str) -> tf.data.Dataset:
        """Batched (features, meta) of every clip of `split`, in order: what `embed` takes."""
        return self._clips(split, False).batch(self.cfg.train.global_batch_size)

    def embed_split(self, model: keras.Model, split: str):
        """`embed` over every clip of `split`: (audio [N, E], video [N, E], meta) of its usable clips."""
        return embed(model, self._eval_clips(split))

    def callbacks(self, model, log_dir):
        val = self._eval_clips(self.cfg.data.eval_split)
        return [RetrievalMetricsCallback(val, os.path.join(log_dir, "retrieval"), self.cfg.eval.retrieval_block_size)]

    def evaluate(self, model, split: str) -> dict:
        a, v, _ = self.embed_split(model, split)
        bs = self.cfg.eval.retrieval_block_size
        result = {"all": metrics.both_directions(a, v, block_size=bs), "num_clips": int(len(a))}
        result["chance_r1"] = 1.0 / len(a)
        return result

    def format_results(self, result: dict) -> str:
        r = result["all"]
        head = "".join(f"{d}_R@{k:<8}" for d in ("a2v", "v2a") for k in metrics.RECALL_AT)
        vals = "".join(f"{r[d][f'r{k}']:<12.3f}" for d in ("a2v", "v2a") for k in metrics.RECALL_AT)
        return f"{head}\n{vals}\n(clips: {result['num_clips']}, chance R@1 {result['chance_r1']:.3f})"
