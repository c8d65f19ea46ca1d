"""The evaluation pictures (matplotlib, Agg backend; host-side NumPy only).

* ``localisation_boxplot``: per-method box plots of grid pointing-game scores (the paper's
  localisation figure), one panel per grid size, with the uniform baseline 1/s² dashed.
* ``faithfulness_plot``: mean deletion/insertion curves per method (MIF and LIF), with the
  areas in the legend.
* ``gallery``: the same images explained by every method side by side (channel-summed
  attributions in the reference's symmetric blue-white-red map; B-cos colour explanations
  where given).
"""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

import numpy as np

__all__ = ["faithfulness_plot", "gallery", "localisation_boxplot"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def localisation_boxplot(scores: Mapping[str, Mapping[int, np.ndarray]], path: str,
                         title: Optional[str] = None) -> str:
    """scores[method label][grid size] = 1-D array of scores -> PNG at ``path``."""
    plt = _pyplot()
    sizes = sorted({s for per in scores.values() for s in per})
    if not sizes:
        raise ValueError("localisation_boxplot: no scores to plot")
    labels = list(scores)
    fig, axes = plt.subplots(
        1,
        len(sizes),
        figsize=(max(4.0, 0.9 * len(labels) + 1.5) * len(sizes), 4),
        squeeze=False,
        layout="constrained",
    )
    for ax, s in zip(axes[0], sizes):
        data = [np.asarray(scores[m].get(s, []), np.float64) for m in labels]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=45, ha="right")
        ax.axhline(
            1.0 / (s * s), color="grey", linestyle="--", linewidth=1, label=f"uniform 1/{s * s}"
        )
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"grid pointing game {s}x{s}")
        ax.set_ylabel("localisation")
        ax.legend(loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title)
    path = _save(fig, path)
    plt.close(fig)
    return path


_PANELS = (("deletion_mif", "deletion, most important first (lower is better)"),
           ("deletion_lif", "deletion, least important first (higher is better)"),
           ("insertion_mif", "insertion, most important first (higher is better)"),
           ("insertion_lif", "insertion, least important first (lower is better)"))


def faithfulness_plot(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    path: str,
    ylabel: str = "probability",
    title: Optional[str] = None,
) -> str:
    """curves[method label][curve name] = [N, T] (or mean [T]) -> 2×2 panels of mean curves."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), squeeze=False, layout="constrained")
    for ax, (key, name) in zip(axes.ravel(), _PANELS):
        for label, per in curves.items():
            if key not in per:
                continue
            c = np.asarray(per[key], np.float64)
            mean = c.mean(axis=0) if c.ndim == 2 else c
            frac = np.linspace(0, 1, mean.shape[-1])
            area = float((mean.sum() - 0.5 * (mean[0] + mean[-1])) / (len(mean) - 1))
            ax.plot(frac, mean, label=f"{label} ({area:.3f})")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("fraction of pixels")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    path = _save(fig, path)
    plt.close(fig)
    return path


def gallery(images: np.ndarray, maps: Mapping[str, Sequence[np.ndarray]], path: str,
            titles: Optional[Sequence[str]] = None) -> str:
    """Rows: images; columns: the image, then one explanation per method.

    Args:
      images: [n, H, W, 3] RGB in [0, 1].
      maps: method label -> n pictures, each [H, W] (attribution summed over channels,
        drawn with the symmetric blue-white-red map) or [H, W, 3|4] (an RGB(A) picture,
        e.g. a B-cos colour explanation, drawn over white).
      titles: optional per-row titles (e.g. the class).
    """
    from bcos_jax import visualize

    plt = _pyplot()
    images = np.asarray(images)
    n = len(images)
    cols = 1 + len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.6 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(np.clip(images[i], 0, 1))
        if titles is not None:
            axes[i, 0].set_ylabel(str(titles[i]), fontsize=8)
        for j, (label, pics) in enumerate(maps.items(), start=1):
            pic = np.asarray(pics[i])
            if pic.ndim == 2:
                pic = visualize.contribution_map_image(pic)
            elif pic.shape[-1] == 4:
                pic = visualize.composite(pic)
            axes[i, j].imshow(np.clip(pic, 0, 1))
            if i == 0:
                axes[i, j].set_title(label, fontsize=8)
        if i == 0:
            axes[i, 0].set_title("image", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    path = _save(fig, path)
    plt.close(fig)
    return path
