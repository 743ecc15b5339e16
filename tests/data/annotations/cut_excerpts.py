"""Cuts the excerpts in this directory from the full annotation files (see README.md).

Usage: python tests/data/annotations/cut_excerpts.py [FULL_DIR]
FULL_DIR defaults to ../shared/data/annotations beside the repository.
"""

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
CHARADES_FIRST_VIDEOS = 120
ACTIVITYNET_FIRST_VIDEOS = 100


def cut_charades(full: pathlib.Path) -> None:
    lines = (full / "charades_sta_test.txt").read_bytes().decode("utf-8").splitlines(keepends=True)
    order = list(dict.fromkeys(line.split()[0] for line in lines))
    # The first videos, and every video whose sentences hold a doubled space.
    keep = set(order[:CHARADES_FIRST_VIDEOS]) | {line.split()[0] for line in lines if "  " in line.split("##")[1]}
    (HERE / "charades_sta_test.txt").write_bytes("".join(x for x in lines if x.split()[0] in keep).encode("utf-8"))
    # The durations of exactly those videos, header first, bytes (CRLF) as in the full file.
    rows = (full / "charades_test_durations.csv").read_bytes().splitlines(keepends=True)
    rows = rows[:1] + [row for row in rows[1:] if row.split(b",")[0].decode("ascii") in keep]
    (HERE / "charades_test_durations.csv").write_bytes(b"".join(rows))


def cut_activitynet(full: pathlib.Path) -> None:
    text = (full / "activitynet_captions_val_1.json").read_text(encoding="utf-8")
    data = json.loads(text)
    assert json.dumps(data) == text, "the full file is no longer json.dumps's formatting"
    # The first videos, and every video with an end past its duration.
    keep = set(list(data)[:ACTIVITYNET_FIRST_VIDEOS])
    keep |= {k for k, e in data.items() if any(end > e["duration"] for _, end in e["timestamps"])}
    excerpt = {k: e for k, e in data.items() if k in keep}
    (HERE / "activitynet_captions_val_1.json").write_text(json.dumps(excerpt), encoding="utf-8")


if __name__ == "__main__":
    full_dir = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[3] / "shared" / "data" / "annotations"
    cut_charades(full_dir)
    cut_activitynet(full_dir)
