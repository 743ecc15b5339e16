"""Pictures for the demo report: attention against the true segment, retrieval similarities."""

from __future__ import annotations

import logging

import keras
import numpy as np

from trainer import train_lib


def _load(job_dir: str):
    """The trained model and its prepared task, from a finished job dir (read, never written)."""
    keras.backend.clear_session()
    task, model = train_lib.load_trained(job_dir)
    return model, task


def localization_figure(job_dirs: dict, path: str, num_captions: int = 4) -> str:
    """Test captions (audio-dependent first) × models: attention over time vs. the true segment.

    Args:
      job_dirs: model name -> finished localization job dir (same records).
      path: PNG to write.
      num_captions: rows.

    Returns:
      `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    preds = {}
    for name, job_dir in job_dirs.items():
        model, task = _load(job_dir)
        head, truth, attention, meta = task.predict(model, task.cfg.data.test_split)
        preds[name] = (task.decode(head, attention), truth, attention, meta)
    first = next(iter(preds.values()))
    meta = first[3]
    order = np.argsort(meta["audio_dependent"] != 1, kind="stable")[:num_captions]  # audio-dependent first
    fig, axes = plt.subplots(len(order), len(preds), figsize=(4.2 * len(preds), 1.9 * len(order)), squeeze=False)
    for col, (name, (spans, truth, attention, m)) in enumerate(preds.items()):
        grid = (np.arange(attention.shape[1]) + 0.5) / attention.shape[1]
        for row, i in enumerate(order):
            ax = axes[row][col]
            ax.axvspan(truth[i][0], truth[i][1], color="tab:green", alpha=0.25, label="true")
            ax.plot(grid, attention[i][:, 0], color="tab:blue", label="video att.")
            ax.plot(grid, attention[i][:, 1], color="tab:orange", label="audio att.")
            top = max(float(attention[i].max()), 1e-3) * 1.1
            ax.hlines(top * 0.95, spans[i][0], spans[i][1], color="tab:red", linewidth=4, label="predicted")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, top)
            tag = "audio-dependent" if m["audio_dependent"][i] == 1 else "visible"
            ax.set_title(f"{name}: {m['video_id'][i].decode()} [{tag}]", fontsize=8)
            if row == 0 and col == 0:
                ax.legend(fontsize=6, loc="upper right")
    fig.supxlabel("time (fraction of the video)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    logging.info("Wrote %s", path)
    return path


def retrieval_figure(job_dir: str, path: str, max_items: int = 60) -> str:
    """The audio×video similarity matrix of a retrieval model on its test clips, and its rank histogram."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from trainer.retrieval import metrics

    model, task = _load(job_dir)
    a, v, _ = task.embed_split(model, task.cfg.data.test_split)
    ranks = metrics.retrieval_ranks(a, v)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.4))
    im = ax1.imshow(a[:max_items] @ v[:max_items].T, cmap="viridis")
    ax1.set_xlabel("video clip")
    ax1.set_ylabel("audio clip (query)")
    ax1.set_title("similarity (true pairs on the diagonal)", fontsize=8)
    fig.colorbar(im, ax=ax1, fraction=0.046)
    ax2.hist(ranks, bins=np.arange(1, len(a) + 2) - 0.5, color="tab:blue")
    ax2.set_xlabel("rank of the true video (audio→video)")
    ax2.set_ylabel("queries")
    ax2.set_title(f"{len(a)} clips, chance median rank {len(a) // 2}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    logging.info("Wrote %s", path)
    return path
