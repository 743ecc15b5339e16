"""MALTA training and evaluation throughput on this CPU (random inputs, real model and losses)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

# The vocabulary, and the words of the random captions.
WORDS = ["rotate", "the", "red", "circle", "slide", "blue", "star"]


def _model_cfg(name: str):
    from trainer.config import load_experiment

    path = {"paper": "configs/malta_paper.yaml", "demo": "configs/malta_demo.yaml"}[name]
    cfg = load_experiment(path)
    m = cfg.model
    # The demo takes its dims from the records: built-in 2D + 3D = 199, MFCC + deltas = 39.
    return dataclasses.replace(
        m, video_dim=m.video_dim or 199, audio_dim=m.audio_dim or 39
    ), cfg.train.global_batch_size


def _inputs(m, batch, rng):
    return {
        "video": rng.normal(size=(batch, m.num_segments, m.video_dim)).astype("float32"),
        "audio": rng.normal(size=(batch, m.num_segments, m.audio_dim)).astype("float32"),
        "segment_mask": np.ones((batch, m.num_segments), "float32"),
        "caption": np.array([" ".join(rng.choice(WORDS, 6)) for _ in range(batch)]),
    }


def run(steps: int = 5) -> list[dict]:
    import keras

    from trainer.localization import losses, metrics
    from trainer.localization import model as model_lib

    rows = []
    rng = np.random.default_rng(0)
    for name in ("demo", "paper"):
        m, batch = _model_cfg(name)
        keras.backend.clear_session()
        model = model_lib.with_text_input(model_lib.build_model(m, WORDS), model_lib.caption_tokenizer(m, WORDS))
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss={"span": losses.SpanSmoothL1(), "attention": losses.AttentionCalibration()},
            loss_weights={"span": m.span_loss_weight, "attention": m.calibration_loss_weight},
            metrics={"span": [metrics.MeanIoU()]},
        )
        x = _inputs(m, batch, rng)
        span = np.sort(rng.uniform(size=(batch, 2)), axis=1).astype("float32")
        y = {"span": span, "attention": np.ones((batch, m.num_segments), "float32")}
        model.train_on_batch(x, y)  # build + trace
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        train_rate = steps * batch / (time.perf_counter() - start)
        model.predict_on_batch(x)
        start = time.perf_counter()
        for _ in range(steps):
            model.predict_on_batch(x)
        eval_rate = steps * batch / (time.perf_counter() - start)
        detail = (
            f"M={m.num_segments}, video {m.video_dim}-d, audio {m.audio_dim}-d, hidden {m.video_hidden}, batch {batch}"
        )
        rows.append(
            {"benchmark": f"MALTA {name} train", "value": round(train_rate, 1), "unit": "examples/s", "detail": detail}
        )
        rows.append(
            {"benchmark": f"MALTA {name} eval", "value": round(eval_rate, 1), "unit": "examples/s", "detail": detail}
        )
    return rows
