"""The seed table of `python -m trainer.experiments`: mean ± std per variant and subset."""

import math

import pytest

from trainer import experiments


def _run(r1, r5=None):
    subset = {"r1_iou_0.1": 0.9, "r1_iou_0.3": 0.8, "r1_iou_0.5": r1, "r1_iou_0.7": 0.2, "miou": 0.5}
    if r5 is not None:
        subset["r5_iou_0.5"] = r5
    return {"all": dict(subset), "audio_dependent": dict(subset)}


def test_table_has_mean_and_std_over_seeds_and_r5_only_when_every_run_has_it():
    table = experiments.format_table({"AV (MALTA)": [_run(0.6, 0.9), _run(0.8, 0.7)], "A only": [_run(0.5, 0.8)]})
    header, *rows = table.splitlines()
    assert header.split() == ["model", "subset", *experiments.COLUMNS, "r5_iou_0.5", "seeds"]
    assert len(rows) == 4  # 2 variants × (all, audio_dependent); no not_audio_dependent in these runs
    # Sample std over the two seeds: sqrt(((0.6 - 0.7)² + (0.8 - 0.7)²) / 1) = 0.1414.
    assert rows[0].split()[:2] == ["AV", "(MALTA)"] and "0.700±0.141" in rows[0] and "0.800±0.141" in rows[0]
    assert rows[0].split()[-1] == "2" and rows[2].split()[-1] == "1"
    assert "0.500" in rows[2].split()

    without = experiments.format_table({"AV (MALTA)": [_run(0.6, 0.9)], "A only": [_run(0.5)]})
    assert "r5_iou_0.5" not in without.splitlines()[0]


def test_mean_std_is_the_sample_std_over_seeds():
    # mean 0.3; squared deviations 0.04 + 0.01 + 0.09 = 0.14; sample std sqrt(0.14 / 2) = 0.26458.
    assert experiments.mean_std([0.1, 0.2, 0.6]) == pytest.approx((0.3, 0.2645751))
    assert experiments.mean_std([1.0, 3.0]) == pytest.approx((2.0, math.sqrt(2.0)))
    assert experiments.mean_std([2.0, 2.0]) == (2.0, 0.0)
    mean, std = experiments.mean_std([0.5])
    assert mean == 0.5 and math.isnan(std)
    assert experiments.format_mean_std([0.1, 0.2, 0.6]) == "0.300±0.265"
    assert experiments.format_mean_std([0.5]) == "0.500"
    with pytest.raises(ValueError, match="at least one run"):
        experiments.mean_std([])


def test_cascade_table_uses_the_same_mean_and_std():
    from trainer import cascade

    def run(r1):
        one = {"r1": r1, "r5": 0.5, "r10": 0.9, "mean_rank": 3.0}
        return {"all": {"a2v": dict(one), "v2a": dict(one)}}

    table = cascade.format_table({"target only": [run(0.1), run(0.2), run(0.6)], "one seed": [run(0.4)]}, chance=0.1)
    _, three, one, _ = table.splitlines()
    assert three.split()[2] == "0.300±0.265" and three.split()[-1] == "3"
    assert one.split()[2] == "0.400" and one.split()[-1] == "1"
