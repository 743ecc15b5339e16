"""Benchmarks of the retrieval task: AVLnet training throughput and the blocked retrieval metrics."""

from __future__ import annotations

import logging
import time
import tracemalloc

import keras
import numpy as np

from trainer.retrieval.config import RetrievalModelConfig
from trainer.retrieval.metrics import retrieval_metrics
from trainer.retrieval.model import build_model

# The small CPU model (same shapes as the paper's, narrower) and the paper's model.
DEMO_CONFIG = RetrievalModelConfig(
    audio_widths=[32, 64, 96, 128], first_conv_channels=32, embedding_dim=256, visual_2d_dim=2048, visual_3d_dim=2048
)
PAPER_CONFIG = RetrievalModelConfig()


def synthetic_batch(cfg: RetrievalModelConfig, batch_size: int, frames: int, visual_steps: int = 10, seed: int = 0):
    """A batch of random AVLnet inputs (full-length audio, all visual steps valid).

    Args:
      cfg: the model config (dims).
      batch_size: clips.
      frames: audio frames per clip.
      visual_steps: visual feature steps per clip.
      seed: random seed.

    Returns:
      The input dict of numpy arrays.
    """
    rng = np.random.default_rng(seed)
    batch = {
        "audio": rng.standard_normal((batch_size, frames, cfg.num_mel_bins), dtype=np.float32),
        "audio_length": np.full((batch_size,), frames, np.int32),
        "audio_present": np.ones((batch_size,), np.float32),
        "visual_2d": rng.standard_normal((batch_size, visual_steps, cfg.visual_2d_dim), dtype=np.float32),
        "visual_mask": np.ones((batch_size, visual_steps), np.float32),
    }
    if cfg.use_3d:
        batch["visual_3d"] = rng.standard_normal((batch_size, visual_steps, cfg.visual_3d_dim), dtype=np.float32)
    return batch


def train_throughput(cfg: RetrievalModelConfig, name: str, batch_size: int = 32, frames: int = 1024, steps: int = 3):
    """Training examples per second of AVLnet on one device (Adam, compiled train step).

    One warm-up step (tracing, optimizer state) is not timed; then `steps` steps on
    the same in-memory batch are, so the number excludes any input pipeline.

    Args:
      cfg: the model config.
      name: label of the result.
      batch_size: clips per step.
      frames: audio frames per clip (1024 = 10.24 s).
      steps: timed steps.

    Returns:
      A result dict.
    """
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    batch = synthetic_batch(cfg, batch_size, frames)
    start = time.perf_counter()
    model.train_on_batch(batch)
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(batch)
    elapsed = time.perf_counter() - start
    result = {
        "benchmark": "retrieval_train_throughput",
        "model": name,
        "audio_widths": list(cfg.audio_widths),
        "embedding_dim": cfg.embedding_dim,
        "params": int(model.count_params()),
        "batch_size": batch_size,
        "audio_frames": frames,
        "timed_steps": steps,
        "warmup_step_s": round(warmup, 3),
        "step_s": round(elapsed / steps, 3),
        "examples_per_s": round(batch_size * steps / elapsed, 3),
    }
    logging.info("%s", result)
    return result


def metrics_cost(num_items: int, dim: int = 256, block_size: int = 4096, seed: int = 0):
    """Time and peak traced memory of `retrieval_metrics` on random [N, dim] embeddings.

    Peak memory is what `tracemalloc` sees numpy allocate during the call (the
    score block and the comparison masks), not counting the inputs.

    Args:
      num_items: N.
      dim: embedding size.
      block_size: queries per block.
      seed: random seed.

    Returns:
      A result dict.
    """
    rng = np.random.default_rng(seed)
    audio = rng.standard_normal((num_items, dim), dtype=np.float32)
    video = audio + rng.standard_normal((num_items, dim), dtype=np.float32)
    tracemalloc.start()
    start = time.perf_counter()
    metrics = retrieval_metrics(audio, video, block_size=block_size)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result = {
        "benchmark": "retrieval_metrics",
        "num_items": num_items,
        "dim": dim,
        "block_size": block_size,
        "measured": True,
        "seconds": round(elapsed, 3),
        "peak_mib": round(peak / 2**20, 1),
        "r1": metrics["r1"],
    }
    logging.info("%s", result)
    return result


def extrapolate_metrics_cost(measured: dict, num_items: int) -> dict:
    """Estimates `metrics_cost` at a larger N from a measurement.

    Time grows as N^2 (N^2 scores of `dim` multiply-adds, N^2 comparisons); the
    peak memory is one score block and one boolean mask, block_size * N * 5 bytes,
    plus the ranks.

    Args:
      measured: a `metrics_cost` result.
      num_items: the N to estimate for.

    Returns:
      A result dict with "measured": False.
    """
    scale = (num_items / measured["num_items"]) ** 2
    block = min(measured["block_size"], num_items)
    return {
        **measured,
        "num_items": num_items,
        "measured": False,
        "seconds": round(measured["seconds"] * scale, 1),
        "peak_mib": round((block * num_items * 5 + num_items * 8) / 2**20, 1),
        "r1": None,
    }


def run(include_paper: bool = True, measure_100k: bool = True, block_size: int = 1024) -> list[dict]:
    """Runs the retrieval benchmarks.

    Args:
      include_paper: also time the paper-size model (about a minute or more on 2
        CPU cores).
      measure_100k: measure `retrieval_metrics` at 100,000 items (over a minute
        on 2 cores) instead of extrapolating from 10,000.
      block_size: rows per block (the trainer's default, `eval.retrieval_block_size`).

    Returns:
      One dict per result.
    """
    results = [train_throughput(DEMO_CONFIG, "demo")]
    if include_paper:
        results.append(train_throughput(PAPER_CONFIG, "paper"))
    small = metrics_cost(10_000, block_size=block_size)
    results.append(small)
    results.append(
        metrics_cost(100_000, block_size=block_size) if measure_100k else extrapolate_metrics_cost(small, 100_000)
    )
    return results
