"""Temporal IoU metrics against hand-computed values, numpy and Keras."""

import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from trainer.localization import metrics

PRED = np.array([[0.0, 0.5], [0.2, 0.4], [0.6, 0.9], [0.3, 0.3], [0.1, 0.6]])
GT = np.array([[0.25, 0.75], [0.0, 1.0], [0.0, 0.5], [0.3, 0.3], [0.1, 0.6]])
# Overlap 0.25 / union 0.75; contained 0.2 / 1.0; disjoint; two equal points (empty union); identical.
IOU = np.array([1 / 3, 0.2, 0.0, 0.0, 1.0])


def test_temporal_iou_hand_computed():
    np.testing.assert_allclose(metrics.temporal_iou(PRED, GT), IOU)
    # Reversed intervals count as empty.
    assert metrics.temporal_iou([0.5, 0.2], [0.0, 1.0]) == 0.0
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        metrics.temporal_iou(np.zeros((2, 3)), GT[:2])


def test_recall_and_mean_iou():
    recalls = metrics.recall_at_iou(PRED, GT)
    assert recalls == {"r1_iou_0.1": 3 / 5, "r1_iou_0.3": 2 / 5, "r1_iou_0.5": 1 / 5, "r1_iou_0.7": 1 / 5}
    # IoU >= m counts: an IoU of exactly 0.2 passes m = 0.2.
    assert metrics.recall_at_iou(PRED, GT, thresholds=(0.2,)) == {"r1_iou_0.2": 3 / 5}
    assert metrics.mean_iou(PRED, GT) == pytest.approx(IOU.mean())


def test_snap_to_grid_floors_like_the_reference():
    spans = np.array([[0.3, 0.6], [0.26, 0.49], [-0.1, 1.2]])
    np.testing.assert_allclose(metrics.snap_to_grid(spans, 4), [[0.25, 0.5], [0.25, 0.25], [0.0, 1.0]])
    # Per-video segment counts.
    np.testing.assert_allclose(metrics.snap_to_grid(spans[:2], [2, 10]), [[0.0, 0.5], [0.2, 0.4]])
    with pytest.raises(ValueError, match="num_segments"):
        metrics.snap_to_grid(spans, 0)


def test_evaluate_spans_raw_and_snapped():
    pred = np.array([[0.3, 0.6], [0.26, 0.49]])
    gt = np.array([[0.25, 0.5], [0.25, 0.5]])
    results = metrics.evaluate_spans(pred, gt, num_segments=4, thresholds=(0.5,))
    # Raw: 0.2 / 0.35 and 0.23 / 0.25; snapped: (0.25, 0.5) -> 1 and (0.25, 0.25) -> 0.
    assert results["r1_iou_0.5"] == 1.0
    assert results["miou"] == pytest.approx((0.2 / 0.35 + 0.23 / 0.25) / 2)
    assert results["snapped_r1_iou_0.5"] == 0.5
    assert results["snapped_miou"] == pytest.approx(0.5)
    assert sorted(results) == ["miou", "r1_iou_0.5", "snapped_miou", "snapped_r1_iou_0.5"]


def test_temporal_nms():
    proposals = np.array([[0.0, 0.5], [0.05, 0.5], [0.6, 0.9], [0.55, 0.95], [0.0, 0.1]])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.1])
    # (0.05, 0.5) overlaps the best at IoU 0.9, (0.55, 0.95) the third at 0.75.
    np.testing.assert_array_equal(metrics.temporal_nms(proposals, scores, 0.5, top_k=5), [0, 2, 4])
    np.testing.assert_array_equal(metrics.temporal_nms(proposals, scores, 0.5, top_k=2), [0, 2])
    np.testing.assert_array_equal(metrics.temporal_nms(proposals, scores, 1.0, top_k=3), [0, 1, 2])
    with pytest.raises(ValueError, match="top_k.*0"):
        metrics.temporal_nms(proposals, scores, 0.5, top_k=0)


def test_recall_at_k_iou():
    proposals = np.array(
        [
            [[0.0, 0.5], [0.05, 0.5], [0.6, 0.9]],  # gt (0.6, 0.9) is third by score
            [[0.0, 0.2], [0.1, 0.2], [0.2, 0.3]],  # gt (0.5, 1.0) matches nothing
        ]
    )
    scores = np.array([[0.9, 0.8, 0.7], [0.9, 0.8, 0.7]])
    gt = np.array([[0.6, 0.9], [0.5, 1.0]])
    assert metrics.recall_at_k_iou(proposals, scores, gt, k=2, thresholds=(0.5,)) == {"r2_iou_0.5": 0.0}
    # NMS drops the near-duplicate second proposal, so the top 2 reach the gt.
    assert metrics.recall_at_k_iou(proposals, scores, gt, k=2, thresholds=(0.5,), nms_threshold=0.5) == {
        "r2_iou_0.5": 0.5
    }
    assert metrics.recall_at_k_iou(proposals, scores, gt, k=5, thresholds=(0.5,)) == {"r5_iou_0.5": 0.5}


def test_keras_metrics_match_numpy_over_batches():
    recall, miou = metrics.RecallAtIoU(0.3), metrics.MeanIoU()
    assert (recall.name, miou.name) == ("r1_iou_0.3", "miou")
    for metric in (recall, miou):
        metric.update_state(GT[:2], PRED[:2])
        metric.update_state(GT[2:], PRED[2:])
    assert float(recall.result()) == pytest.approx(2 / 5)
    assert float(miou.result()) == pytest.approx(IOU.mean(), rel=1e-6)
    miou.reset_state()
    assert float(miou.result()) == 0.0
    miou.update_state(GT, PRED, sample_weight=[1.0, 0.0, 0.0, 0.0, 1.0])
    assert float(miou.result()) == pytest.approx((1 / 3 + 1.0) / 2, rel=1e-6)


def test_keras_metrics_config_round_trip():
    recall = metrics.RecallAtIoU(0.7)
    clone = keras.metrics.deserialize(keras.metrics.serialize(recall))
    assert isinstance(clone, metrics.RecallAtIoU) and clone.threshold == 0.7 and clone.name == "r1_iou_0.7"
    clone = keras.metrics.deserialize(keras.metrics.serialize(metrics.MeanIoU(name="val_miou")))
    assert isinstance(clone, metrics.MeanIoU) and clone.name == "val_miou"
    with pytest.raises(ValueError, match="threshold.*1.5"):
        metrics.RecallAtIoU(1.5)


@pytest.mark.e2e
def test_keras_metrics_under_mirrored_strategy(tmp_path):
    """Two replicas see different captions; the metric must count all of them."""
    script = textwrap.dedent(
        f"""
        import numpy as np
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from trainer.localization import metrics
        pred = np.array({PRED.tolist()}, "float32")
        gt = np.array({GT.tolist()}, "float32")
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            recall, miou = metrics.RecallAtIoU(0.3), metrics.MeanIoU()

        @tf.function
        def step():
            def replica_fn():
                index = tf.distribute.get_replica_context().replica_id_in_sync_group
                y_true = tf.cond(index == 0, lambda: gt[0:2], lambda: gt[2:4])
                y_pred = tf.cond(index == 0, lambda: pred[0:2], lambda: pred[2:4])
                recall.update_state(y_true, y_pred)
                miou.update_state(y_true, y_pred)
            strategy.run(replica_fn)

        step()
        print(float(recall.result()), float(miou.result()))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[2]), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    recall_value, miou_value = map(float, result.stdout.split()[-2:])
    # Replica 0 holds captions 0-1, replica 1 captions 2-3 (IoUs 1/3, 0.2, 0, 0).
    assert recall_value == pytest.approx(1 / 4)
    assert miou_value == pytest.approx((1 / 3 + 0.2) / 4, rel=1e-6)


def test_attention_proposals_rank_the_decoders_span_first():
    # fused = sqrt(video * audio): a high peak at 3 and a lower one at 6.
    video = np.array([0.05, 0.05, 0.3, 0.4, 0.1, 0.05, 0.3, 0.05])
    audio = np.array([0.05, 0.05, 0.2, 0.5, 0.1, 0.05, 0.2, 0.05])
    att = np.stack([video, audio], -1)[None]
    proposals, scores = metrics.attention_proposals(att, 0.3, extra_thresholds=(0.1, 0.7))
    assert proposals.shape == (1, scores.shape[1], 2)
    order = np.argsort(-scores[0], kind="stable")
    # The best proposal is the attention decoder's own span.
    np.testing.assert_allclose(proposals[0, order[0]], metrics.attention_to_span(att, 0.3)[0])
    # Then the same peak at 0.1 and 0.7 of its weight (.447: >= .045 -> 0..7, >= .313 -> 3 only).
    np.testing.assert_allclose(proposals[0, order[1]], [0.0, 1.0])
    np.testing.assert_allclose(proposals[0, order[2]], [3 / 8, 4 / 8])
    # The second peak (segment 6, sqrt(.06) = .245) comes after all of the first's runs.
    np.testing.assert_allclose(proposals[0, order[3]], [6 / 8, 7 / 8])
    assert scores[0, order[3]] == pytest.approx(np.sqrt(0.06) / np.sqrt(0.2), abs=1e-5)
    # The truth sits on the second peak: missed at R@1, found at R@5 after NMS.
    gt = np.array([[6 / 8, 7 / 8]])
    assert metrics.recall_at_iou(proposals[0, order[:1]], gt, (0.5,)) == {"r1_iou_0.5": 0.0}
    assert metrics.recall_at_k_iou(proposals, scores, gt, k=5, thresholds=(0.5,), nms_threshold=0.5) == {
        "r5_iou_0.5": 1.0
    }
    with pytest.raises(ValueError, match="extra_thresholds"):
        metrics.attention_proposals(att, 0.3, extra_thresholds=(0.0,))


def test_attention_proposals_pad_captions_with_fewer_peaks():
    flat = np.full((1, 4), 0.25)
    peaked = np.array([[0.1, 0.6, 0.1, 0.2]])
    proposals, scores = metrics.attention_proposals(np.concatenate([flat, peaked]), 0.5, extra_thresholds=())
    # A flat row has one peak (its first segment's plateau) and one run: all of it.
    np.testing.assert_allclose(proposals[0, 0], [0.0, 1.0])
    assert np.isneginf(scores[0, 1:]).all()
    # The peaked row: segment 1; then segment 3's run at half its weight (>= 0.1), all four.
    np.testing.assert_allclose(proposals[1, :2], [[0.25, 0.5], [0.0, 1.0]])
