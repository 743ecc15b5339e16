"""Serving on this CPU: SavedModel latency and throughput, first call with and without warmup, export
and load time, and the predictor's compute and memory on long videos.

Each measurement runs in its own fresh process (`python -m bench.serving worker ...`), so one
load's warm state never flatters another's first call. The model sizes are MALTA at the paper's
size (configs/malta_paper.yaml: M=128, BiLSTM widths 256, 4096-d video from imported features,
128 log-Mel bins) and the demo's (configs/malta_demo.yaml with model.num_segments=128), exported
untrained from a small generated corpus: latency does not depend on the weights. The corpus, its
records and the long videos are kept in `bench_out/serving_work` and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join("bench_out", "serving_work")
CONFIGS = {"paper": "configs/malta_paper.yaml", "demo": "configs/malta_demo.yaml"}
SIZES = ("paper", "demo")
SIGNATURES = ("localize", "serving_default")
# Imported "C3D" features of the paper-size records: 4096-d at this many vectors per second.
PAPER_VIDEO_DIM = 4096
PAPER_FEATURE_RATE = 2.0


def _cpu_snapshot() -> tuple:
    """(wall seconds, busy CPU seconds of the whole machine, CPU seconds of this process) now."""
    with open("/proc/stat") as f:
        jiffies = [int(x) for x in f.readline().split()[1:9]]
    busy = (sum(jiffies) - jiffies[3] - jiffies[4]) / os.sysconf("SC_CLK_TCK")  # Less idle and iowait.
    own = sum(os.times()[:2])
    return time.perf_counter(), busy, own


def _conditions(since: tuple) -> str:
    """The CPUs, the 1-minute load average at the start, and the share of all CPUs that other
    processes used since the snapshot `since`: whether something else competed with the measurement."""
    wall, busy, own = (b - a for a, b in zip(since, _cpu_snapshot()))
    others = max(0.0, busy - own) / max(wall, 1e-9) / os.cpu_count()
    return f"{os.cpu_count()} cpus, load {since[3]:.2f}, others used {100 * others:.0f}% of the cpus"


def _start() -> tuple:
    """A snapshot for `_conditions`, with the 1-minute load average."""
    return (*_cpu_snapshot(), os.getloadavg()[0])


def _percentile_ms(times: list, q: float) -> float:
    return round(float(np.percentile(np.asarray(times) * 1e3, q)), 2)


# ---------------------------------------------------------------------------------------------
# Data: a small corpus, its records for each size, and the long videos (cached under WORK).


def _corpus(work: str) -> str:
    from corpus import synthetic

    out = os.path.join(work, "corpus")
    if not os.path.exists(os.path.join(out, "annotations.json")):
        cfg = synthetic.SyntheticConfig(
            out=out,
            # Enough training captions for the paper's batch of 20 (12 of 24 videos would give ~14).
            videos=24,
            languages={"en": 1.0, "ja": 1.0},
            seed=3,
            min_duration=16.0,
            max_duration=24.0,
            split=(0.6, 0.2, 0.2),
            workers=2,
        )
        synthetic.generate(cfg, progress=False)
    return out


def _paper_features(work: str, corpus: str) -> str:
    """Random 4096-d "C3D" feature files, one per video: the paper's input width."""
    out = os.path.join(work, "c3d")
    with open(os.path.join(corpus, "annotations.json")) as f:
        annotations = json.load(f)
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    for video_id, ann in sorted(annotations.items()):
        path = os.path.join(out, f"{video_id}.npy")
        if not os.path.exists(path):
            rows = int(np.ceil(ann["duration"] * PAPER_FEATURE_RATE)) + 1
            np.save(path, rng.standard_normal((rows, PAPER_VIDEO_DIM)).astype(np.float32))
    return out


def _records(work: str, size: str, corpus: str) -> str:
    from preprocessing import pipeline

    out = os.path.join(work, f"records_{size}")
    if os.path.exists(os.path.join(out, "schema.json")):
        return out
    sets = ["num_shards=1"]
    if size == "paper":
        sets += [
            "audio.num_mel_bins=128",
            "imported_2d.kind=npy",
            f"imported_2d.path={os.path.abspath(_paper_features(work, corpus))}",
            f"imported_2d.rate={PAPER_FEATURE_RATE}",
        ]
    if os.path.exists(out):
        shutil.rmtree(out)  # A half-written set from an interrupted run.
    argv = ["--annotations", corpus, "--format", "builtin", "--videos_dir", corpus, "--output_dir", out]
    for s in sets:
        argv += ["--set", s]
    pipeline.run(argv)
    return out


def _long_video(work: str, minutes: int) -> str:
    from corpus import long_video

    path = os.path.join(work, f"long_{minutes}min.mp4")
    if not os.path.exists(path):
        long_video.write_long_video(path + ".part.mp4", minutes=minutes)
        os.replace(path + ".part.mp4", path)
    return path


# ---------------------------------------------------------------------------------------------
# Workers: each runs in a fresh process and prints one JSON line.


def _worker_export(size: str, records: str, work: str) -> dict:
    """Builds the size's (untrained) model on `records` and times `export_trained`."""
    from serving import export
    from trainer import distribute, train_lib
    from trainer.config import load_experiment

    overrides = [f"data.records_dir={records}"]
    if size == "demo":
        overrides.append("model.num_segments=128")
    cfg = load_experiment(os.path.join(REPO, CONFIGS[size]), overrides)
    job = os.path.join(work, "jobs", size)
    base = os.path.join(work, "exports", size)
    if os.path.exists(base):
        shutil.rmtree(base)  # Only this benchmark's scratch exports: each run times a fresh one.
    train_lib.set_up_job(cfg, job, train=True, evaluate=False, overwrite=True)
    task = train_lib.prepare_task(cfg, job, train=True)
    model, _ = train_lib.build_and_compile(task, distribute.make_strategy(cfg.runtime), train=True)
    since = _start()
    start = time.perf_counter()
    path = export.export_trained(task, model, base, "localizer", cfg.export.warmup_requests)
    seconds = time.perf_counter() - start
    conditions = _conditions(since)
    m = task.model_cfg
    return {
        "path": path,
        "export_s": round(seconds, 2),
        "params": int(model.count_params()),
        "model": (
            f"M={m.num_segments}, video {m.video_dim}-d, audio {m.audio_dim}-d ({cfg.data.audio_feature}), "
            f"hidden {m.video_hidden}/{m.audio_hidden}/{m.text_hidden}, attention {m.attention_units}"
        ),
        "warmup_requests": cfg.export.warmup_requests,
        "conditions": conditions,
    }


def _requests(export_dir: str):
    from serving import warmup

    return warmup.read_requests(os.path.join(export_dir, "assets.extra", warmup.WARMUP_FILE))


def _batch1(requests, signature: str) -> dict:
    """The inputs of the export's first batch-1 request to `signature` (a real validation record and caption)."""
    for _, sig, inputs in requests:
        if sig == signature and len(inputs["captions"]) == 1:
            return inputs
    raise ValueError(f"no batch-1 warmup request for signature {signature!r}")


def _tensors(inputs: dict) -> dict:
    import tensorflow as tf

    return {k: tf.constant(v) for k, v in inputs.items()}


def _call(fn, x) -> None:
    fn(**x)["start"].numpy()


def _worker_steady(export_dir: str, calls: int, max_seconds: float, batch: int, batch_calls: int) -> dict:
    """Load time, then per signature: batch-1 p50 / p99 and batch-`batch` throughput.

    Batch 1 runs `calls` calls, or as many as `max_seconds` allow (at least 100).
    """
    import tensorflow as tf

    since = _start()
    start = time.perf_counter()
    loaded = tf.saved_model.load(export_dir)
    out = {"load_s": round(time.perf_counter() - start, 2), "load_conditions": _conditions(since)}
    requests = _requests(export_dir)
    for sig in SIGNATURES:
        fn = loaded.signatures[sig]
        inputs = _batch1(requests, sig)
        x = _tensors(inputs)
        for _ in range(20):
            _call(fn, x)
        since = _start()
        times = []
        while len(times) < calls and (len(times) < 100 or since[0] + max_seconds > time.perf_counter()):
            t = time.perf_counter()
            _call(fn, x)
            times.append(time.perf_counter() - t)
        conditions = _conditions(since)
        xb = _tensors({k: np.repeat(v, batch, axis=0) for k, v in inputs.items()})
        for _ in range(3):
            _call(fn, xb)
        since = _start()
        t = time.perf_counter()
        for _ in range(batch_calls):
            _call(fn, xb)
        batch_s = time.perf_counter() - t
        batch_conditions = _conditions(since)
        out[sig] = {
            "p50_ms": _percentile_ms(times, 50),
            "p99_ms": _percentile_ms(times, 99),
            "mean_ms": round(1e3 * float(np.mean(times)), 2),
            "calls": len(times),
            "conditions": conditions,
            "captions_per_s": round(batch * batch_calls / batch_s, 1),
            "batch_ms": round(1e3 * batch_s / batch_calls, 1),
            "batch_calls": batch_calls,
            "batch_conditions": batch_conditions,
        }
    return out


def _worker_first(export_dir: str, signature: str, replay: bool, steady_calls: int) -> dict:
    """The first batch-1 call of `signature` after load (after replaying the warmup requests if `replay`)."""
    import tensorflow as tf

    since = _start()
    loaded = tf.saved_model.load(export_dir)
    requests = _requests(export_dir)
    x = _tensors(_batch1(requests, signature))
    out = {"replayed": 0}
    if replay:
        # As TF Serving does on load: every request through its signature, in file order.
        start = time.perf_counter()
        for _, sig, inputs in requests:
            loaded.signatures[sig](**_tensors(inputs))
        out["replay_s"] = round(time.perf_counter() - start, 2)
        out["replayed"] = len(requests)
    fn = loaded.signatures[signature]
    start = time.perf_counter()
    _call(fn, x)
    out["first_ms"] = round(1e3 * (time.perf_counter() - start), 1)
    times = []
    for _ in range(steady_calls):
        t = time.perf_counter()
        _call(fn, x)
        times.append(time.perf_counter() - t)
    out["steady_p50_ms"] = _percentile_ms(times, 50)
    out["conditions"] = _conditions(since)
    return out


def _worker_long(export_dir: str, video: str) -> dict:
    """Seconds of predictor compute on `video` and the process's peak RSS, before and after."""
    from serving import predict

    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    localizer = predict.Localizer.load(export_dir)
    caption = str(_batch1(_requests(export_dir), "localize")["captions"][0], "utf-8")
    rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    since = _start()
    start = time.perf_counter()
    result = localizer.localize(video, [caption])
    seconds = time.perf_counter() - start
    conditions = _conditions(since)
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    windows = result.windows
    return {
        "duration_s": round(result.duration, 1),
        "compute_s": round(seconds, 1),
        "windows": len(windows),
        "window_s": round(float(windows[0, 1] - windows[0, 0]), 2),
        "stride_s": round(float(windows[1, 0] - windows[0, 0]), 2) if len(windows) > 1 else None,
        "caption": caption,
        "rss_start_mib": round(rss_start / 1024, 1),
        "rss_after_load_mib": round(rss_load / 1024, 1),
        "rss_peak_mib": round(rss_peak / 1024, 1),
        "conditions": conditions,
    }


_WORKERS = {"export": _worker_export, "steady": _worker_steady, "first": _worker_first, "long": _worker_long}


def _progress(message: str, *args) -> None:
    print("  serving: " + message % args, file=sys.stderr, flush=True)


def _in_fresh_process(kind: str, **kwargs) -> dict:
    """Runs worker `kind` in a new Python process and returns its JSON answer."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    cmd = [sys.executable, "-m", "bench.serving", "worker", kind, json.dumps(kwargs)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.serving worker {kind} {kwargs} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------


def run(
    work: str = WORK,
    calls: int = 1000,
    max_seconds: float = 180.0,
    batch: int = 32,
    batch_calls: int = 10,
    steady_calls: int = 20,
    long_minutes=(20, 60),
) -> list[dict]:
    """All serving measurements, as rows {benchmark, value, unit, detail}.

    Args:
      work: the cache of corpus, records and long videos (reused when present).
      calls: batch-1 calls per signature for p50 / p99 ...
      max_seconds: ... or as many as fit in this many seconds (at least 100): a safety cap; the
        paper size's 1000 calls of each signature take about 2 minutes on 2 cores.
      batch: the throughput batch size.
      batch_calls: calls at that batch size.
      steady_calls: calls after the first one, for the same process's steady p50.
      long_minutes: lengths of the generated long videos for the predictor.
    """
    work = os.path.abspath(work)
    os.makedirs(work, exist_ok=True)
    rows = [
        {
            "benchmark": "serving: machine",
            "value": os.cpu_count(),
            "unit": "cpus",
            "detail": "load averages (1, 5, 15 min) at the start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        }
    ]
    _progress("preparing data in %s", work)
    corpus = _corpus(work)
    records = {size: _records(work, size, corpus) for size in SIZES}
    exports = {}
    for size in SIZES:
        _progress("exporting %s", size)
        ex = _in_fresh_process("export", size=size, records=records[size], work=work)
        exports[size] = ex["path"]
        rows.append(
            {
                "benchmark": f"serving {size}: export",
                "value": ex["export_s"],
                "unit": "s",
                "detail": f"export_trained, {ex['warmup_requests']} warmup requests; {ex['model']}, "
                f"{ex['params']:,} params; {ex['conditions']}",
            }
        )
    for size in SIZES:
        _progress("steady latency, %s", size)
        st = _in_fresh_process(
            "steady",
            export_dir=exports[size],
            calls=calls,
            max_seconds=max_seconds,
            batch=batch,
            batch_calls=batch_calls,
        )
        rows.append(
            {
                "benchmark": f"serving {size}: load",
                "value": st["load_s"],
                "unit": "s",
                "detail": f"tf.saved_model.load in a fresh process; {st['load_conditions']}",
            }
        )
        for sig in SIGNATURES:
            s = st[sig]
            what = f"batch 1, {s['calls']} calls after 20 warm; mean {s['mean_ms']} ms; {s['conditions']}"
            rows.append({"benchmark": f"serving {size}: {sig} p50", "value": s["p50_ms"], "unit": "ms", "detail": what})
            rows.append({"benchmark": f"serving {size}: {sig} p99", "value": s["p99_ms"], "unit": "ms", "detail": what})
            rows.append(
                {
                    "benchmark": f"serving {size}: {sig} batch {batch}",
                    "value": s["captions_per_s"],
                    "unit": "captions/s",
                    "detail": f"{s['batch_calls']} calls of {s['batch_ms']} ms; {s['batch_conditions']}",
                }
            )
        for sig in SIGNATURES:
            for replay in (False, True):
                _progress("first call, %s %s replay=%s", size, sig, replay)
                fc = _in_fresh_process(
                    "first", export_dir=exports[size], signature=sig, replay=replay, steady_calls=steady_calls
                )
                how = (
                    f"after replaying {fc['replayed']} warmup requests ({fc['replay_s']} s)" if replay else "no warmup"
                )
                rows.append(
                    {
                        "benchmark": f"serving {size}: {sig} first call, {'warmup' if replay else 'cold'}",
                        "value": fc["first_ms"],
                        "unit": "ms",
                        "detail": f"{how}; {fc['first_ms'] / fc['steady_p50_ms']:.1f}x the same process's p50 "
                        f"of {fc['steady_p50_ms']} ms over the next {steady_calls} calls; fresh process; "
                        f"{fc['conditions']}",
                    }
                )
    for minutes in long_minutes:
        video = _long_video(work, minutes)
        _progress("predictor on %d min", minutes)
        lv = _in_fresh_process("long", export_dir=exports["demo"], video=video)
        hours = lv["duration_s"] / 3600.0
        windows = f"{lv['windows']} windows of {lv['window_s']} s, stride {lv['stride_s']} s"
        rows.append(
            {
                "benchmark": f"predictor demo, {minutes} min video",
                "value": round(lv["compute_s"] / hours, 1),
                "unit": "s per video hour",
                "detail": f"{lv['compute_s']} s for {lv['duration_s']} s of video, 1 caption, {windows} "
                f"(decode + features + model); {lv['conditions']}",
            }
        )
        rows.append(
            {
                "benchmark": f"predictor demo, {minutes} min peak RSS",
                "value": lv["rss_peak_mib"],
                "unit": "MiB",
                "detail": f"ru_maxrss, fresh process: {lv['rss_start_mib']} MiB after imports (TF), "
                f"{lv['rss_after_load_mib']} MiB after Localizer.load, {lv['rss_peak_mib']} MiB after localize",
            }
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="One measurement in this process (run() starts these).")
    worker.add_argument("kind", choices=sorted(_WORKERS))
    worker.add_argument("kwargs", help="The worker's arguments as a JSON object.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(_WORKERS[args.kind](**json.loads(args.kwargs))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
