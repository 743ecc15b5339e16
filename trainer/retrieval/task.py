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

KS = (1, 5, 10)


def embed(model: keras.Model, ds: tf.data.Dataset):
    """Audio and video embeddings of every valid clip of a batched (x, meta) dataset."""
    audio, video, meta = [], [], {k: [] for k in data_lib.META_KEYS}
    for x, m in ds:
        out = model(x, training=False)
        # Clips without audio or with non-finite features can't be queries or items.
        keep = np.asarray(out["valid"]) > 0
        audio.append(np.asarray(out["audio_embedding"])[keep])
        video.append(np.asarray(out["video_embedding"])[keep])
        for k in meta:
            meta[k].append(m[k].numpy()[keep])
    if not audio:
        raise input_lib.RecordsError("No clips to embed: the split or language filter left nothing.")
    return np.concatenate(audio), np.concatenate(video), {k: np.concatenate(v) for k, v in meta.items()}


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


@register_task("retrieval")
class RetrievalTask(Task):
    """Learn audio↔video embeddings from narrated clips; retrieve in both directions."""

    def prepare(self, from_job: bool = False) -> None:
        cfg = self.cfg
        mcfg = cfg.model.retrieval
        self.info = input_lib.RecordsInfo(cfg.data.records_dir)
        self.streams = ("visual_2d", "visual_3d") if mcfg.use_3d else ("visual_2d",)
        self.info.check_streams(self.streams)
        self.counts = {}
        for split in (cfg.data.train_split, cfg.data.eval_split, cfg.data.test_split):
            self.counts[split] = input_lib.validate_records(self.info, split, self.streams, cfg.data.on_bad_record)
            logging.info("Split %s: %s", split, self.counts[split])
        dims = {"num_mel_bins": self.info.audio_dim, "visual_2d_dim": self.info.stream_dims["visual_2d"]}
        if mcfg.use_3d:
            dims["visual_3d_dim"] = self.info.stream_dims["visual_3d"]
        for name, have in dims.items():
            want = getattr(mcfg, name)
            if want and want != have:
                raise input_lib.RecordsError(
                    f"model.retrieval.{name}={want} but the records in {cfg.data.records_dir} give {have}; "
                    f"set it to {have} or 0 to take it from the records."
                )
        self.model_cfg = dataclasses.replace(mcfg, **dims)
        facts = {
            "records_dir": cfg.data.records_dir,
            "config": {"model.retrieval.use_3d": mcfg.use_3d},
            "records": records_facts(self.info, self.streams),
            "model": {f"model.retrieval.{name}": value for name, value in dims.items()},
        }
        if from_job:
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

    def _clips(self, split: str, is_training: bool) -> tf.data.Dataset:
        cfg = self.cfg
        videos = input_lib.read_split(self.info, cfg.data, split, self.streams, is_training, cfg.train.seed)
        if cfg.data.cache:
            videos = videos.cache()
        return videos.flat_map(lambda v: self.parser.clips(v, is_training))

    def build_model(self) -> keras.Model:
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

    def callbacks(self, model, log_dir):
        val = self._clips(self.cfg.data.eval_split, False).batch(self.cfg.train.global_batch_size)
        return [RetrievalMetricsCallback(val, os.path.join(log_dir, "retrieval"), self.cfg.eval.retrieval_block_size)]

    def evaluate(self, model, split: str) -> dict:
        a, v, meta = embed(model, self._clips(split, False).batch(self.cfg.train.global_batch_size))
        bs = self.cfg.eval.retrieval_block_size
        result = {"all": metrics.both_directions(a, v, block_size=bs), "num_clips": int(len(a))}
        result["chance_r1"] = 1.0 / len(a)
        return result

    def export(self, model, export_dir: str):
        from serving import audio_encoder

        return audio_encoder.export_audio_encoder(
            model, self.info.audio_config, os.path.join(export_dir, "audio_encoder")
        )

    def format_results(self, result: dict) -> str:
        r = result["all"]
        head = "".join(f"{d}_R@{k:<8}" for d in ("a2v", "v2a") for k in KS)
        vals = "".join(f"{r[d][f'r{k}']:<12.3f}" for d in ("a2v", "v2a") for k in KS)
        return f"{head}\n{vals}\n(clips: {result['num_clips']}, chance R@1 {result['chance_r1']:.3f})"
