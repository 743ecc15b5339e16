"""The seed table of `python -m trainer.experiments`: mean ± std per variant and subset."""

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
    assert rows[0].split()[:2] == ["AV", "(MALTA)"] and "0.700±0.100" in rows[0] and "0.800±0.100" in rows[0]
    assert rows[0].split()[-1] == "2" and rows[2].split()[-1] == "1"
    assert "0.500" in rows[2].split()

    without = experiments.format_table({"AV (MALTA)": [_run(0.6, 0.9)], "A only": [_run(0.5)]})
    assert "r5_iou_0.5" not in without.splitlines()[0]
