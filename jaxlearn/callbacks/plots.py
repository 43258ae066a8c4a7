"""Matplotlib helpers for looking inside training. Every figure has a title, labelled axes (units where the
values have them), whole-number ticks on counted axes (batches, steps) and a colour bar where colour carries a
value."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.text import Annotation
from matplotlib.ticker import MaxNLocator

from jaxlearn.callbacks.stats import ABS_RANGE, N_BINS, SIGNED_RANGE

__all__ = ["plot_func", "plot_losses", "plot_series", "plot_stats", "color_dim", "dead_chart",
           "plot_lr_find", "show_images", "save", "integer_ticks", "annotate_apart"]

# The value range of each histogram ``ActivationStats`` keeps (jaxlearn.callbacks.stats.summarize), for color_dim.
HISTOGRAM_RANGES = {"hist": ABS_RANGE, "signed_hist": SIGNED_RANGE}
HISTOGRAM_LABELS = {"hist": "|activation|", "signed_hist": "activation"}


def integer_ticks(*axes: Axis) -> None:
    """Whole-number ticks only, for counted axes (batches, steps, layers), so none reads 1.5."""
    for axis in axes:
        axis.set_major_locator(MaxNLocator(integer=True))


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
    ``ax`` if given, else a new figure (titled ``label``, or f(x)); never calls ``show``, so it works under
    Agg. ``label`` names the curve in a legend (several functions on one ``ax``).
    """
    if ax is None:
        fig, ax = plt.subplots()
        ax.set_title(label or "f(x)")
    else:
        fig = ax.figure
    ax.set(xlabel=ax.get_xlabel() or "x", ylabel=ax.get_ylabel() or "f(x)")
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
                path: str | Path | None = None, title: str = "training loss") -> Figure:
    """Per-batch training loss, with each epoch's validation loss as a point at its batch count."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(len(train_losses)), train_losses, lw=0.8, label="train (per batch)")
    if len(valid_losses):
        xs, ys = zip(*valid_losses)
        ax.plot(xs, ys, "o-", label="valid (per epoch)")
    ax.set(xlabel="training batch", ylabel="loss", title=title)
    integer_ticks(ax.xaxis)
    ax.legend()
    return save(fig, path)


def plot_series(series: Mapping[str, Sequence[float]], xlabel: str = "step",
                path: str | Path | None = None, title: str | None = None) -> Figure:
    """One small panel per named series (e.g. recorded learning rate and momentum), each titled and
    y-labelled with its name; ``title`` names the whole figure."""
    fig, axs = plt.subplots(1, len(series), figsize=(4 * len(series), 3), squeeze=False)
    for ax, (name, values) in zip(axs[0], series.items()):
        ax.plot(values)
        ax.set(title=name, xlabel=xlabel, ylabel=name)
        integer_ticks(ax.xaxis)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def plot_stats(stats: Mapping[str, Mapping[str, np.ndarray]], path: str | Path | None = None,
               title: str = "activation mean and std per layer over training") -> Figure:
    """miniai's ``plot_stats``: each layer's activation mean (left) and std (right) over training batches."""
    fig, (ax_mean, ax_std) = plt.subplots(1, 2, figsize=(11, 4))
    for name, s in stats.items():
        ax_mean.plot(s["mean"], label=name)
        ax_std.plot(s["std"], label=name)
    ax_mean.set(title="means", xlabel="training batch", ylabel="activation mean")
    ax_std.set(title="stds", xlabel="training batch", ylabel="activation std")
    integer_ticks(ax_mean.xaxis, ax_std.xaxis)
    ax_std.legend(fontsize=7)
    fig.suptitle(title)
    return save(fig, path)


def _grid(n: int, width: float = 3.5):
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axs = plt.subplots(rows, cols, figsize=(width * cols, 2.8 * rows), squeeze=False)
    for ax in axs.flat[n:]:
        ax.set_axis_off()
    return fig, axs.flat


def color_dim(stats: Mapping[str, Mapping[str, np.ndarray]], key: str = "hist",
              path: str | Path | None = None, title: str | None = None,
              value_range: tuple[float, float] | None = None) -> Figure:
    """miniai's ``color_dim`` (lesson 17): per layer, training batch along x, the histogram's bins up y (in
    activation units: ``value_range``, by default the range ``ActivationStats`` bins ``key`` over — |x| on
    [0, 10] for ``"hist"``), colour log(1 + count) with its colour bar; ``title`` names the run."""
    if value_range is None and key not in HISTOGRAM_RANGES:  # a histogram of unknown range: its bins by number
        value_range, ylabel = (0, np.shape(next(iter(stats.values()))[key])[-1]), "bin"
    else:
        ylabel = HISTOGRAM_LABELS.get(key, key)
    lo, hi = value_range or HISTOGRAM_RANGES[key]
    fig, axs = _grid(len(stats))
    for ax, (name, s) in zip(axs, stats.items()):
        counts = np.asarray(s[key])
        image = ax.imshow(np.log1p(counts.T), origin="lower", aspect="auto", cmap="viridis",
                          extent=(-0.5, len(counts) - 0.5, lo, hi))
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("training batch", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        integer_ticks(ax.xaxis)
        fig.colorbar(image, ax=ax, label="log(1 + count)")
    fig.suptitle(title or f"{ylabel} histogram per layer over training (colour: log(1 + count))")
    fig.tight_layout()
    return save(fig, path)


def dead_chart(stats: Mapping[str, Mapping[str, np.ndarray]], path: str | Path | None = None,
               title: str | None = None) -> Figure:
    """miniai's ``dead_chart``: share of each layer's activations in the lowest |x| bin (``[0, 0.25)`` with
    ``ActivationStats``' 40 bins on [0, 10]), per training batch; ``title`` names the run."""
    lowest_bin = (ABS_RANGE[1] - ABS_RANGE[0]) / N_BINS
    fig, axs = _grid(len(stats))
    for ax, (name, s) in zip(axs, stats.items()):
        ax.plot(s["dead"])
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("training batch", fontsize=8)
        ax.set_ylabel(f"share with |x| < {lowest_bin:g}", fontsize=8)
        integer_ticks(ax.xaxis)
    fig.suptitle(title or "'dead' activations per layer over training")
    fig.tight_layout()
    return save(fig, path)


def annotate_apart(ax: Axes, points: Sequence[tuple[float, float]], labels: Sequence[str], fontsize: float = 7,
                   offsets: Sequence[tuple[float, float]] = ((4, 3), (4, -10), (-4, 3), (-4, -10), (0, 8), (0, -14))
                   ) -> list[Annotation]:
    """Label ``points`` (data coordinates) so that no two labels overlap: each label, in the order given (most
    important first), goes beside its point at the first of ``offsets`` (points; left of the point when
    negative) where it stays inside the axes and overlaps no label placed before it, and is left out where
    none is free. Call it once the axes' limits are final. Returns the labels drawn."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed, boxes = [], []
    for (x, y), label in zip(points, labels):
        for dx, dy in offsets:
            text = ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                               ha="right" if dx < 0 else "left" if dx > 0 else "center")
            box = text.get_window_extent(renderer).padded(1)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in boxes):
                placed.append(text)
                boxes.append(box)
                break
            text.remove()
    return placed


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
    ax.set(xlabel="learning rate", ylabel="smoothed loss", title="learning-rate range test")
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

