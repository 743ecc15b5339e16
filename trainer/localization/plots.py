"""Pictures of localization: attention over time against the true and predicted segment."""

from __future__ import annotations

import io

import keras
import matplotlib
import numpy as np
import tensorflow as tf

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402


def attention_figure(attention: np.ndarray, true_span, pred_span, caption: str, title: str = "") -> "plt.Figure":
    """One caption: video and audio attention per segment, true segment shaded, prediction as bars.

    Args:
      attention: [M, 2] (video, audio) weights.
      true_span, pred_span: normalized (start, end).
      caption: the caption text (any script; shown as given).
    """
    m = attention.shape[0]
    x = (np.arange(m) + 0.5) / m
    fig, ax = plt.subplots(figsize=(6, 2.4), dpi=80)
    ax.axvspan(true_span[0], true_span[1], color="tab:green", alpha=0.25, label="true")
    ax.plot(x, attention[:, 0], color="tab:blue", label="video attention")
    ax.plot(x, attention[:, 1], color="tab:orange", label="audio attention")
    top = max(float(attention.max()), 1e-3) * 1.1
    ax.hlines(top * 0.95, pred_span[0], pred_span[1], color="tab:red", linewidth=4, label="predicted")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, top)
    ax.set_xlabel("time (fraction of video)")
    ax.set_title((title + ": " if title else "") + caption[:70], fontsize=8)
    ax.legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    return fig


def figure_to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


class AttentionPlotCallback(keras.callbacks.Callback):
    """Draws a fixed set of validation captions to TensorBoard at the end of each epoch.

    Args:
      examples: one batch (x, y, meta) of validation captions, fixed for the run;
        meta holds "video_id" and the raw "caption" text.
      log_dir: TensorBoard dir of the images.
    """

    def __init__(self, examples, log_dir: str):
        super().__init__()
        self.x, self.y, self.meta = examples
        self.log_dir = log_dir
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        out = self.model(self.x, training=False)
        pngs = []
        captions = self.meta["caption"].numpy()
        for i in range(len(captions)):
            fig = attention_figure(
                np.asarray(out["attention"][i]),
                self.y["span"][i].numpy(),
                np.asarray(out["span"][i]),
                captions[i].decode("utf-8", "replace"),
                title=self.meta["video_id"][i].numpy().decode(),
            )
            pngs.append(tf.image.decode_png(figure_to_png(fig), channels=4))
        with self._writer.as_default():
            tf.summary.image("attention_vs_truth", tf.stack(pngs), step=epoch, max_outputs=len(pngs))
        self._writer.flush()
