"""Audio front-end speed: avalign's log-Mel against librosa's melspectrogram + power_to_db on the same audio.

`python -m bench.audio_frontend [--seconds 600] [--repeats 5]` prints a table. All
compute the same AVLnet log-Mel of the same waveform (librosa's is
`bench.librosa_reference`, the one the tests check against), are warmed up once, and are timed over
`repeats` runs. Median and best wall times are reported, and the median process CPU
time: this machine's 2 cores are shared, so wall times move with the load while CPU
time shows the work done.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from typing import Callable

import numpy as np

from avalign.audio import AudioConfig

TARGET_SPEEDUP = 5.0


def _test_audio(seconds: float, sample_rate: int) -> np.ndarray:
    """Speech-like test signal: harmonic tones with a moving pitch, plus noise, in [-1, 1]."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = 120.0 + 40.0 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    y = sum(0.2 / k * np.sin(k * phase) for k in range(1, 6)) + 0.02 * rng.standard_normal(t.size)
    return (y / np.max(np.abs(y))).astype(np.float32)


def _time(fn: Callable[[], np.ndarray], repeats: int) -> tuple[list[float], list[float], np.ndarray]:
    """(wall seconds, process CPU seconds, output) of `repeats` runs after a warm-up run."""
    out = fn()  # Warm-up: traces, compiles, fills caches.
    walls, cpus = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return walls, cpus, out


def run(seconds: float = 600.0, repeats: int = 5) -> list[dict]:
    """Times the log-Mel of `seconds` of 16 kHz audio: avalign's numpy path, its SavedModel graph, librosa.

    Args:
      seconds: length of the test waveform.
      repeats: timed runs per implementation, after one warm-up run.

    Returns:
      Rows {name, seconds_of_audio, wall_s (median), best_wall_s, cpu_s (median
      process CPU time, all threads), x_realtime (median), speedup_vs_librosa
      (median wall), max_abs_diff_db (against librosa)}; librosa's row has speedup 1.

    Raises:
      ValueError: if `seconds` or `repeats` is not positive.
    """
    import tensorflow as tf

    from avalign import audio
    from bench import librosa_reference as audio_reference

    if seconds <= 0 or repeats <= 0:
        raise ValueError(f"seconds and repeats must be > 0, got {seconds} and {repeats}.")
    cfg = AudioConfig()
    waveform = _test_audio(seconds, cfg.sample_rate)
    module = audio.LogMelFrontEnd(cfg)
    candidates = {
        "avalign compute_log_mel_numpy": lambda: audio.compute_log_mel_numpy(waveform, cfg),
        "avalign LogMelFrontEnd (graph)": lambda: module(tf.constant(waveform)).numpy(),
        "librosa melspectrogram+power_to_db": lambda: audio_reference.log_mel(waveform, cfg),
    }
    results = {}
    for name, fn in candidates.items():
        logging.info("Timing %s on %.0f s of audio", name, seconds)
        results[name] = _time(fn, repeats)
    reference = results["librosa melspectrogram+power_to_db"][2]
    librosa_wall = statistics.median(results["librosa melspectrogram+power_to_db"][0])
    rows = []
    for name, (walls, cpus, out) in results.items():
        if out.shape != reference.shape:
            raise RuntimeError(f"{name} returned {out.shape}, librosa {reference.shape}.")
        wall = statistics.median(walls)
        rows.append(
            {
                "name": name,
                "seconds_of_audio": seconds,
                "wall_s": round(wall, 4),
                "best_wall_s": round(min(walls), 4),
                "cpu_s": round(statistics.median(cpus), 4),
                "x_realtime": round(seconds / wall, 1),
                "speedup_vs_librosa": round(librosa_wall / wall, 2),
                "max_abs_diff_db": round(float(np.max(np.abs(out - reference))), 5),
            }
        )
    return rows


def rows() -> list[dict]:
    """`bench.run` rows {benchmark, value, unit, detail} of the default `run()`."""
    out = []
    for row in run():
        out.append(
            {
                "benchmark": f"audio front-end: {row['name']}",
                "value": row["x_realtime"],
                "unit": "x real time",
                "detail": (
                    f"{row['seconds_of_audio']:.0f} s in {row['wall_s']:.3f} s median (best {row['best_wall_s']:.3f} s), "
                    f"{row['speedup_vs_librosa']}x librosa, {row['cpu_s']:.3f} s CPU "
                    f"(target >= {TARGET_SPEEDUP:.0f}x for compute_log_mel_numpy)"
                ),
            }
        )
    return out


def format_table(table: list[dict]) -> str:
    """The rows of `run` as a fixed-width text table."""
    header = (
        f"{'implementation':<36} {'audio s':>8} {'median s':>9} {'best s':>8} {'cpu s':>7} {'x realtime':>11} "
        f"{'vs librosa':>10} {'max |diff| dB':>13}"
    )
    lines = [header, "-" * len(header)]
    for r in table:
        lines.append(
            f"{r['name']:<36} {r['seconds_of_audio']:>8.0f} {r['wall_s']:>9.4f} {r['best_wall_s']:>8.4f} "
            f"{r['cpu_s']:>7.3f} {r['x_realtime']:>11.1f} {r['speedup_vs_librosa']:>9.2f}x {r['max_abs_diff_db']:>13.5f}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audio_frontend", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="Seconds of 16 kHz audio to process.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed runs per implementation after a warm-up.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    table = run(args.seconds, args.repeats)
    print(format_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
