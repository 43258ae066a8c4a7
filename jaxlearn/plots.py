"""Matplotlib helpers for looking inside training."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["plot_func", "plot_losses", "plot_series", "plot_stats", "color_dim", "dead_chart",
           "plot_lr_find", "save"]


def plot_func(
    f: Callable[[np.ndarray], np.ndarray],
    start: float = -5.0,
    end: float = 5.0,
    steps: int = 100,
    ax: Axes | None = None,
) -> tuple[Figure, Axes]:
    """Plot ``f`` on ``linspace(start, end, steps)`` with the axes drawn in (lesson 17).

    ``f`` gets a float32 NumPy array and may return a NumPy or JAX array, e.g.
    ``plot_func(lambda x: GeneralRelu(leak=0.1, sub=0.4).apply({}, x))``. Draws into
    ``ax`` if given, else a new figure; never calls ``show``, so it works under Agg.
    """
    if ax is None:
        fig, ax = plt.subplots()
    else:
        fig = ax.figure
    x = np.linspace(start, end, steps, dtype=np.float32)
    ax.plot(x, np.asarray(f(x)))
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
              path: str | Path | None = None) -> Figure:
    """miniai's ``color_dim``: log1p of each layer's activation histogram (bins up, batches right)."""
    fig, axs = _grid(len(stats))
    for ax, (name, s) in zip(axs, stats.items()):
        ax.imshow(np.log1p(np.asarray(s[key]).T), origin="lower", aspect="auto", cmap="viridis")
        ax.set_title(name, fontsize=8)
        ax.set_axis_off()
    return save(fig, path)


def dead_chart(stats: Mapping[str, Mapping[str, np.ndarray]], path: str | Path | None = None) -> Figure:
    """miniai's ``dead_chart``: share of each layer's activations in the lowest |x| bin, per batch."""
    fig, axs = _grid(len(stats))
    for ax, (name, s) in zip(axs, stats.items()):
        ax.plot(s["dead"])
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=8)
    return save(fig, path)


def plot_lr_find(lrs: Sequence[float], losses: Sequence[float], suggestion: float | None = None,
                 path: str | Path | None = None) -> Figure:
    """Smoothed loss against learning rate on a log axis, with the suggested lr marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel="smoothed loss")
    if suggestion is not None:
        ax.axvline(suggestion, color="r", ls="--", label=f"suggested lr {suggestion:.2g}")
        ax.legend()
    return save(fig, path)
