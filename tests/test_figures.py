"""Every figure jaxlearn and the experiments draw reads on its own: a title, labelled axes, whole-number ticks
on counted axes (batches, steps, layers), a colour bar where colour carries a value (color_dim), and scatter
labels that never overlap. Built from small synthetic statistics, checked on the matplotlib objects."""

import importlib.util
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxlearn.callbacks.plots import (annotate_apart, color_dim, dead_chart, plot_func, plot_losses,  # noqa: E402
                                      plot_lr_find, plot_series, plot_stats)
from jaxlearn.callbacks.stats import ABS_RANGE, N_BINS  # noqa: E402
from jaxlearn.makemore.plots import plot_activations, plot_grad_hists, plot_update_ratios  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N_BATCHES = 4  # so few that matplotlib's default locator would put ticks at 0.5, 1.5, ...


def experiment(name: str):
    """An experiment script as a module of its own name (``makemore`` would shadow jaxlearn's)."""
    spec = importlib.util.spec_from_file_location(f"figures_{name}", ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def stats():
    """ActivationStats.stats of two layers over N_BATCHES training batches."""
    rng = np.random.default_rng(0)
    return {f"GeneralRelu_{i}": {"mean": rng.normal(size=N_BATCHES), "std": rng.uniform(0.5, 1, N_BATCHES),
                                 "hist": rng.integers(0, 500, (N_BATCHES, N_BINS)).astype(np.float32),
                                 "dead": rng.uniform(0, 1, N_BATCHES)} for i in range(2)}


def panels(fig) -> list:
    """The data axes of ``fig``: not colour bars, not switched-off grid cells."""
    bars = {im.colorbar.ax for ax in fig.axes for im in ax.images if im.colorbar is not None}
    return [ax for ax in fig.axes if ax not in bars and ax.axison]


def assert_labelled(ax):
    assert ax.get_xlabel().strip() and ax.get_ylabel().strip() and ax.get_title().strip(), \
        (ax.get_xlabel(), ax.get_ylabel(), ax.get_title())


def assert_integer_ticks(axis):
    lo, hi = sorted(axis.get_view_interval())
    ticks = [t for t in axis.get_majorticklocs() if lo - 1e-9 <= t <= hi + 1e-9]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


def suptitle(fig) -> str:
    return fig._suptitle.get_text() if fig._suptitle is not None else ""


def test_plot_stats_labels_both_panels_with_integer_batches(stats):
    fig = plot_stats(stats)
    ax_mean, ax_std = panels(fig)
    for ax in (ax_mean, ax_std):
        assert_labelled(ax)
        assert_integer_ticks(ax.xaxis)
    assert ax_mean.get_ylabel() == "activation mean" and ax_std.get_ylabel() == "activation std"
    assert suptitle(fig)


def test_color_dim_has_a_colour_bar_and_activation_units_up_the_y_axis(stats):
    fig = color_dim(stats)
    layers = panels(fig)
    assert len(layers) == len(stats) and suptitle(fig)
    for ax, s in zip(layers, stats.values()):
        assert_labelled(ax)
        assert_integer_ticks(ax.xaxis)
        image = ax.images[0]
        assert image.colorbar is not None and image.colorbar.ax.get_ylabel() == "log(1 + count)"
        np.testing.assert_allclose(image.get_array(), np.log1p(s["hist"].T), rtol=1e-6)  # bins up, batches right
        assert ax.get_ylim() == ABS_RANGE and ax.get_ylabel() == "|activation|"  # ticks read as |x|, not bin numbers
        assert ax.get_xlim() == (-0.5, N_BATCHES - 0.5)


def test_color_dim_of_an_unknown_histogram_numbers_its_bins(stats):
    for s in stats.values():
        s["other"] = s["hist"][:, :8]
    ax = panels(color_dim(stats, key="other", title="run 1"))[0]
    assert ax.get_ylabel() == "bin" and ax.get_ylim() == (0, 8)


def test_dead_chart_labels_the_lowest_bin_and_counts_batches(stats):
    fig = dead_chart(stats, title="baseline")
    assert suptitle(fig) == "baseline"
    for ax in panels(fig):
        assert_labelled(ax)
        assert_integer_ticks(ax.xaxis)
        assert ax.get_ylim() == (0, 1) and "0.25" in ax.get_ylabel()  # 10 / 40 bins: the "dead" bin's edge


def test_the_other_training_figures_are_labelled_and_titled():
    rng = np.random.default_rng(1)
    losses = plot_losses(rng.uniform(1, 2, N_BATCHES), [(2, 1.5), (4, 1.2)])
    assert_labelled(losses.axes[0])
    assert_integer_ticks(losses.axes[0].xaxis)
    series = plot_series({"learning_rate": [0.1, 0.2, 0.1], "b1": [0.95, 0.85, 0.95]}, title="one-cycle")
    for ax in series.axes:
        assert_labelled(ax)
        assert_integer_ticks(ax.xaxis)
    assert suptitle(series) == "one-cycle"
    lrs = np.geomspace(1e-4, 1, 30)
    assert_labelled(plot_lr_find(lrs, 2 - np.sin(np.linspace(0, 3, 30)), suggestions=1e-2).axes[0])
    _, ax = plot_func(np.tanh)
    assert_labelled(ax)


def test_makemore_panels_are_labelled_with_integer_steps():
    hist = {"range": 1.0, "hist": np.arange(10.0), "mean": 0.1, "std": 0.6, "saturated": 0.05,
            "grad_data": 1e-3}
    fig, axs = plt.subplots(1, 3)
    plot_activations(axs[0], {"Tanh_0": hist})
    plot_grad_hists(axs[1], {"Tanh_0": hist}, "weight gradients", "grad_data")
    plot_update_ratios(axs[2], {"Linear_0": np.array([-3.2, -3.0, -2.9, -3.1])})
    for ax in axs:
        assert_labelled(ax)
    assert_integer_ticks(axs[2].xaxis)


def test_makemore_deep_summary_counts_layers_in_whole_numbers(tmp_path):
    makemore = experiment("makemore")
    layer = {"std": 0.6, "saturated_pct": 5.0, "grad_std": 1e-3}
    results = {"a": {"title": "tanh, gain 5/3", "at_init": [layer] * 2},
               "b": {"title": "tanh, gain 3", "at_init": [layer] * 2}}  # 2 layers: 1.5 would be a default tick
    fig = makemore.plot_deep_summary(results, tmp_path / "deep_summary.png")
    assert suptitle(fig)
    for ax in fig.axes:
        assert_labelled(ax)
        assert_integer_ticks(ax.xaxis)


def overlapping_pairs(texts, renderer) -> list[tuple[str, str]]:
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:] if box_a.overlaps(box_b)]


def test_annotate_apart_never_overlaps_and_leaves_out_what_has_no_room():
    fig, ax = plt.subplots(figsize=(4, 3))
    points = np.zeros((20, 2))  # twenty labels for one spot
    ax.scatter(points[:, 0], points[:, 1])
    placed = annotate_apart(ax, points, [f"a long movie title {i}" for i in range(20)])
    renderer = fig.canvas.get_renderer()
    assert 1 <= len(placed) < 20 and placed[0].get_text() == "a long movie title 0"  # the first one always
    assert overlapping_pairs(placed, renderer) == []
    assert len(ax.texts) == len(placed)  # the ones with no room are removed, not hidden


def test_movie_pca_labels_the_extremes_without_overlap():
    collab = experiment("collab")
    rng = np.random.default_rng(0)
    components = rng.normal(size=(3000, 3)) * [1.0, 0.6, 0.3]
    components[:40] *= 0.05  # many of the most rated in a tight cluster: their titles would pile up
    titles = [f"Movie number {i} (199{i % 10})" for i in range(3000)]
    fig = collab.plot_movie_pca(titles, components, np.array([0.2, 0.1, 0.05]), None)
    ax = fig.axes[0]
    assert_labelled(ax)
    texts = ax.texts
    assert len(texts) >= 12
    renderer = fig.canvas.get_renderer()
    assert overlapping_pairs(texts, renderer) == []
    frame = ax.get_window_extent(renderer)
    assert all(frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
               for box in (t.get_window_extent(renderer) for t in texts))  # no title runs off the axes
    labelled = {t.get_text() for t in texts}
    first = components[:300, 0]
    assert titles[int(np.argmax(first))] in labelled and titles[int(np.argmin(first))] in labelled  # PC1's ends
