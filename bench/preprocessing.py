"""Whole-job preprocessing throughput: seconds of video per wall-second, 1 and 2 workers."""

from __future__ import annotations

import json
import os
import shutil
import time


def _corpus(root: str, videos: int) -> str:
    from corpus import synthetic

    corpus = os.path.join(root, f"corpus_{videos}")
    if not os.path.exists(os.path.join(corpus, "corpus.json")):
        synthetic.generate(
            synthetic.SyntheticConfig(out=corpus, videos=videos, languages="en,mr,hi,ja", seed=7), progress=False
        )
    return corpus


def run(root: str = "bench_out", videos: int = 48, workers=(1, 2)) -> list[dict]:
    """Runs the Beam job (DirectRunner) on a generated corpus with each worker count."""
    from avalign import features
    from preprocessing import pipeline

    corpus = _corpus(root, videos)
    with open(os.path.join(corpus, "annotations.json")) as f:
        seconds = sum(v["duration"] for v in json.load(f).values())
    rows = []
    for n in workers:
        out = os.path.join(root, f"records_w{n}")
        shutil.rmtree(out, ignore_errors=True)
        argv = ["--annotations", corpus, "--format", "builtin", "--videos_dir", corpus, "--output_dir", out]
        if n > 1:
            argv += ["--direct_num_workers", str(n), "--direct_running_mode", "multi_processing"]
        start = time.perf_counter()
        pipeline.run(argv)
        wall = time.perf_counter() - start
        written = sum(features.read_metadata(out)["counts"].values())
        rows.append(
            {
                "benchmark": f"preprocess job, {n} worker(s)",
                "value": round(seconds / wall, 1),
                "unit": "x real time",
                "detail": f"{written} videos, {seconds:.0f} s of video in {wall:.1f} s (target >= 100x on 2 cores)",
            }
        )
    return rows
