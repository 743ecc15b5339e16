"""Segment means, spans and long-video windows of the localization input."""

import numpy as np
import pytest
import tensorflow as tf

from trainer.localization import data


def test_segment_means_whole_video_and_window():
    feats = tf.constant(np.arange(10, dtype=np.float32)[:, None])  # vector i at i/2 s, value i
    whole = data.segment_means(feats, rate=2.0, duration=5.0, num_segments=5).numpy()[:, 0]
    np.testing.assert_allclose(whole, [0.5, 2.5, 4.5, 6.5, 8.5])
    # Window [2, 4): vectors 4..7 only; none from outside leak into its segments.
    window = data.segment_means(feats, rate=2.0, duration=2.0, num_segments=2, start=2.0).numpy()[:, 0]
    np.testing.assert_allclose(window, [4.5, 6.5])
    # More segments than vectors: empty segments take the vector nearest their centre.
    fine = data.segment_means(feats[:2], rate=2.0, duration=1.0, num_segments=4).numpy()[:, 0]
    np.testing.assert_allclose(fine, [0.0, 1.0, 1.0, 1.0])  # centres 0.125, 0.375, 0.625, 0.875 s


def test_normalized_span_clips_to_the_video():
    np.testing.assert_allclose(data.normalized_span([1.0, 8.0], [3.0, 12.0], 10.0).numpy(), [[0.1, 0.3], [0.8, 1.0]])


def test_window_starts_cover_the_video():
    np.testing.assert_allclose(data.window_starts(30.0, 60.0, 30.0), [0.0])
    np.testing.assert_allclose(data.window_starts(100.0, 40.0, 20.0), [0.0, 20.0, 40.0, 60.0])
    np.testing.assert_allclose(data.window_starts(90.0, 40.0, 0.0), [0.0, 20.0, 40.0, 50.0])  # stride: half a window


def test_merge_windows_picks_the_window_whose_attention_backs_its_proposal():
    m = 4
    spans = np.array([[0.0, 0.5], [0.5, 1.0]])
    flat = np.full((m, 2), 0.25)
    peaked = np.zeros((m, 2))
    peaked[2:, :] = 0.5  # window 1 puts all attention where it proposes
    span, score, best = data.merge_windows([0.0, 40.0], 40.0, spans, np.stack([flat, peaked]), duration=100.0)
    assert best == 1 and score == pytest.approx(1.0)
    np.testing.assert_allclose(span, [0.6, 0.8])  # [40 + 20, 40 + 40] s of 100 s


def test_attention_to_span_takes_the_run_around_the_peak():
    from trainer.localization import metrics

    video = np.array([0.05, 0.05, 0.3, 0.4, 0.1, 0.05, 0.3, 0.05])
    audio = np.array([0.05, 0.05, 0.2, 0.5, 0.1, 0.05, 0.0, 0.05])
    att = np.stack([video, audio], -1)[None]
    # fused = sqrt(video * audio) = [.05 .05 .245 .447 .1 .05 0 .05]; peak at 3;
    # >= 0.3 * 0.447 = 0.134 -> segments 2..3
    np.testing.assert_allclose(metrics.attention_to_span(att, 0.3), [[2 / 8, 4 / 8]])
    # >= 0.089 -> 2..4; segment 6, attended by video alone, gets no weight.
    np.testing.assert_allclose(metrics.attention_to_span(att, 0.2), [[2 / 8, 5 / 8]])
    # One modality's attention alone (a [N, M] input) is used as given: segment 6 (0.3) joins at 0.1.
    np.testing.assert_allclose(metrics.attention_to_span(video[None], 0.1), [[0.0, 1.0]])
    with pytest.raises(ValueError, match="threshold"):
        metrics.attention_to_span(att, 0.0)
