"""Matplotlib helpers for looking inside training."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["plot_func", "plot_losses", "plot_series", "plot_stats", "color_dim", "dead_chart",
           "plot_lr_find", "show_images", "save"]


def plot_func(
    f: Callable[[np.ndarray], np.ndarray],
    start: float = -5.0,
    end: float = 5.0,
    steps: int = 100,
    ax: Axes | None = None,
    label: str | None = None,
) -> tuple[Figure, Axes]:
    """Plot ``f`` on ``linspace(start, end, steps)`` with the axes drawn in (lesson 17).

    ``f`` gets a float32 NumPy array and may return a NumPy or JAX array, e.g.
    ``plot_func(lambda x: GeneralRelu(leak=0.1, sub=0.4).apply({}, x))``. Draws into
    ``ax`` if given, else a new figure; never calls ``show``, so it works under Agg. ``label`` names the
    curve in a legend (several functions on one ``ax``).
    """
    if ax is None:
        fig, ax = plt.subplots()
    else:
        fig = ax.figure
    x = np.linspace(start, end, steps, dtype=np.float32)
    ax.plot(x, np.asarray(f(x)), label=label)
    if label is not None:
        ax.legend()
    ax.grid(True, which="both", ls="--")
    ax.axhline(y=0, color="k", linewidth=0.7)
    ax.axvline(x=0, color="k", linewidth=0.7)
    return fig, ax


def save(fig: Figure, path: str | Path | None) -> Figure:
    """Write ``fig`` as an image at ``path`` (folders created) and close it; no-op without a path."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
    return fig


def plot_losses(train_losses: np.ndarray, valid_losses: Sequence[tuple[int, float]] = (),
                path: str | Path | None = None) -> Figure:
    """Per-batch training loss, with each epoch's validation loss as a point at its batch count."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(len(train_losses)), train_losses, lw=0.8, label="train (per batch)")
    if len(valid_losses):
        xs, ys = zip(*valid_losses)
        ax.plot(xs, ys, "o-", label="valid (per epoch)")
    ax.set(xlabel="batch", ylabel="loss")
    ax.legend()
    return save(fig, path)


def plot_series(series: Mapping[str, Sequence[float]], xlabel: str = "step",
                path: str | Path | None = None) -> Figure:
    """One small panel per named series (e.g. recorded learning rate and momentum)."""
    fig, axs = plt.subplots(1, len(series), figsize=(4 * len(series), 3), squeeze=False)
    for ax, (name, values) in zip(axs[0], series.items()):
        ax.plot(values)
        ax.set(title=name, xlabel=xlabel)
    return save(fig, path)


def plot_stats(stats: Mapping[str, Mapping[str, np.ndarray]], path: str | Path | None = None) -> Figure:
    """miniai's ``plot_stats``: each layer's activation mean (left) and std (right) over batches."""
    fig, (ax_mean, ax_std) = plt.subplots(1, 2, figsize=(11, 4))
    for name, s in stats.items():
        ax_mean.plot(s["mean"], label=name)
        ax_std.plot(s["std"], label=name)
    ax_mean.set(title="means", xlabel="batch")
    ax_std.set(title="stds", xlabel="batch")
    ax_std.legend(fontsize=7)
    return save(fig, path)


def _grid(n: int, width: float = 3.5):
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axs = plt.subplots(rows, cols, figsize=(width * cols, 2.8 * rows), squeeze=False)
    for ax in axs.flat[n:]:
        ax.set_axis_off()
    return fig, axs.flat


def color_dim(stats: Mapping[str, Mapping[str, np.ndarray]], key: str = "hist",
              path: str | Path | None = None, title: str | None = None) -> Figure:
    """miniai's ``color_dim``: log1p of each layer's activation histogram (|x| bins up, training batches
    right), with a colorbar; ``title`` names the run."""
    fig, axs = _grid(len(stats))
    for ax, (name, s) in zip(axs, stats.items()):
        image = ax.imshow(np.log1p(np.asarray(s[key]).T), origin="lower", aspect="auto", cmap="viridis")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("batch", fontsize=8)
        ax.set_yticks([])
        fig.colorbar(image, ax=ax, label="log(1 + count)")
    if title:
        fig.suptitle(title)
    return save(fig, path)


def dead_chart(stats: Mapping[str, Mapping[str, np.ndarray]], path: str | Path | None = None,
               title: str | None = None) -> Figure:
    """miniai's ``dead_chart``: share of each layer's activations in the lowest |x| bin, per training batch;
    ``title`` names the run."""
    fig, axs = _grid(len(stats))
    for ax, (name, s) in zip(axs, stats.items()):
        ax.plot(s["dead"])
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("batch", fontsize=8)
        ax.set_ylabel("dead fraction", fontsize=8)
    if title:
        fig.suptitle(title)
    return save(fig, path)


def plot_lr_find(lrs: Sequence[float], losses: Sequence[float],
                 suggestions: float | Mapping[str, float] | None = None, path: str | Path | None = None,
                 clip: float = 4.0) -> Figure:
    """Smoothed loss against learning rate on a log axis, each suggested lr marked on the curve (fastai's
    ``plot_lr_find``). The y-axis ends where the loss first passes ``clip`` × its minimum after it, so the
    blow-up at the end does not flatten the valley the suggestions come from."""
    lrs, losses = np.asarray(lrs, np.float64), np.asarray(losses, np.float64)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel="smoothed loss")
    if np.isfinite(losses).any():
        best = int(np.nanargmin(losses))
        past = np.flatnonzero(~(losses[best:] <= clip * abs(losses[best])))  # NaN counts as blown up
        shown = losses[:best + past[0]] if len(past) else losses
        lo, hi = np.nanmin(shown), np.nanmax(shown)
        pad = 0.05 * (hi - lo) or 0.05 * abs(lo) or 1.0
        ax.set_ylim(lo - pad, hi + pad)
    if suggestions is not None:
        marks = suggestions if isinstance(suggestions, Mapping) else {"suggested lr": suggestions}
        for (name, lr), color in zip(marks.items(), ("r", "g", "m", "c")):
            ax.plot(lr, np.interp(np.log(lr), np.log(lrs), losses), "o", color=color, label=f"{name}: {lr:.2g}")
        ax.legend()
    return save(fig, path)


def show_images(images: Sequence[np.ndarray], titles: Sequence[str] = (), colors: Sequence[str] = (),
                ncols: int = 3, title: str | None = None, path: str | Path | None = None) -> Figure:
    """A grid of images (H×W or H×W×C; one channel drawn in grey) with a title each (fastai's
    ``show_images``), for ``show_results`` and ``plot_top_losses``."""
    n = len(images)
    cols = min(n, ncols)
    rows = -(-n // cols)
    fig, axs = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for i, ax in enumerate(axs.flat):
        ax.set_axis_off()
        if i < n:
            img = np.asarray(images[i])
            ax.imshow(img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img, cmap="gray")
            if i < len(titles):
                ax.set_title(titles[i], fontsize=8, color=colors[i] if i < len(colors) else "k")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)

