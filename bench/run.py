"""`make bench`: runs every benchmark and prints one table (also bench_out/results.json).

`python -m bench.run [--only NAME,...]`
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time

# name -> (module, function); each returns rows {benchmark, value, unit, detail}.
BENCHMARKS = {
    "preprocessing": ("bench.preprocessing", "run"),
    "audio_frontend": ("bench.audio_frontend", "rows"),
    "localization": ("bench.localization", "run"),
    "retrieval": ("trainer.retrieval.benchmark", "run"),
    "serving": ("bench.serving", "run"),
}


def normalize(row: dict) -> dict:
    """Any benchmark's row as {benchmark, value, unit, detail}."""
    if "value" in row:
        return row
    if row.get("benchmark") == "retrieval_train_throughput":
        detail = (
            f"widths {row['audio_widths']}, E={row['embedding_dim']}, {row['params']:,} params, "
            f"batch {row['batch_size']} x {row['audio_frames']} frames, {row['step_s']} s/step"
        )
        return {
            "benchmark": f"AVLnet {row['model']} train",
            "value": row["examples_per_s"],
            "unit": "examples/s",
            "detail": detail,
        }
    if row.get("benchmark") == "retrieval_metrics":
        how = "measured" if row.get("measured") else "extrapolated"
        detail = f"{row['num_items']:,} x {row['num_items']:,}, dim {row['dim']}, block {row['block_size']}, peak {row.get('peak_mib')} MiB ({how})"
        return {
            "benchmark": f"retrieval ranks, {row['num_items']:,} items",
            "value": row["seconds"],
            "unit": "s",
            "detail": detail,
        }
    rest = {k: v for k, v in row.items() if k != "benchmark"}
    return {"benchmark": row.get("benchmark", "?"), "value": "", "unit": "", "detail": json.dumps(rest)}


def format_table(rows: list[dict]) -> str:
    w = max([len(r["benchmark"]) for r in rows] + [9])
    lines = [f"{'benchmark':<{w}}  {'value':>12}  {'unit':<16} detail", "-" * (w + 60)]
    for r in rows:
        lines.append(f"{r['benchmark']:<{w}}  {r['value']:>12}  {r['unit']:<16} {r.get('detail', '')}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help=f"Comma-separated subset of {sorted(BENCHMARKS)}.")
    parser.add_argument("--out", default="bench_out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; valid: {sorted(BENCHMARKS)}")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name in names:
        module, fn = BENCHMARKS[name]
        start = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows += [normalize(r) for r in getattr(importlib.import_module(module), fn)()]
        print(f"  {name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(rows, f, indent=2)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
