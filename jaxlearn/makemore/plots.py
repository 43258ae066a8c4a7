"""The lecture's figures, drawn from :mod:`jaxlearn.makemore.diagnostics`' reductions: activation and gradient
histograms per layer and the update:data ratios over training."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jaxlearn.makemore.diagnostics import DiagnosticRun, weight_ratio_names


def _layer_label(name: str) -> str:
    return name.replace("Tanh_", "layer ")


def plot_activations(ax, act_stats: Mapping, title: str = "activation distribution"):
    """Per-layer histogram of the tanh outputs with mean, std and % saturated in the legend (lecture cell 1)."""
    for name, s in act_stats.items():
        r = float(s["range"])
        edges = np.linspace(-r, r, len(s["hist"]) + 1)
        centers = (edges[:-1] + edges[1:]) / 2
        dens = np.asarray(s["hist"]) / max(np.sum(s["hist"]) * (edges[1] - edges[0]), 1e-30)
        ax.plot(centers, dens, label=f"{_layer_label(name)}: mean {float(s['mean']):+.2f}, "
                                      f"std {float(s['std']):.2f}, sat {100 * float(s['saturated']):.1f}%")
    ax.legend(fontsize=6)
    ax.set(xlabel="tanh output", ylabel="density")
    ax.set_title(title, fontsize=9)


def plot_grad_hists(ax, grad_stats: Mapping, title: str, ratio_key: str | None = None):
    """Per-layer (or per-weight) histogram of gradients, std (and grad:data ratio) in the legend."""
    for name, s in grad_stats.items():
        r = float(s["range"])
        edges = np.linspace(-r, r, len(s["hist"]) + 1)
        centers = (edges[:-1] + edges[1:]) / 2
        dens = np.asarray(s["hist"]) / max(np.sum(s["hist"]) * (edges[1] - edges[0]), 1e-30)
        label = f"{_layer_label(name)}: std {float(s['std']):.2e}"
        if ratio_key:
            label += f", grad:data {float(s[ratio_key]):.2e}"
        ax.plot(centers, dens, label=label)
    ax.legend(fontsize=6)
    ax.set(xlabel="gradient", ylabel="density")
    ax.set_title(title, fontsize=9)


def plot_update_ratios(ax, ratios: Mapping[str, np.ndarray], title: str = "update:data ratio (log10)"):
    """The lecture's ud plot: log10(std(lr·grad)/std(param)) per 2-D parameter over training, guideline −3."""
    from jaxlearn.callbacks.plots import integer_ticks  # here: importing the package loads no matplotlib
    for name, r in ratios.items():
        ax.plot(np.asarray(r), label=name, lw=0.8)
    ax.axhline(-3, color="k", ls="--", lw=1, label="-3 guideline")
    ax.legend(fontsize=6, ncol=2)
    ax.set(xlabel="training step", ylabel="log10(std(lr·grad) / std(param))")
    integer_ticks(ax.xaxis)
    ax.set_title(title, fontsize=9)


def plot_diagnostics(result: DiagnosticRun, title: str, path=None):
    """One figure: activations / activation gradients / weight gradients at the first and the last diagnosed
    step, and the update:data ratios over the run."""
    import matplotlib
    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    diags, steps = result.diagnostics, result.diagnostic_steps
    rows = [(diags[0], steps[0])] + ([(diags[-1], steps[-1])] if len(diags) > 1 else [])
    with_ratios = len(result.losses) > 1
    fig = plt.figure(figsize=(16, 4.2 * (len(rows) + with_ratios)))
    gs = fig.add_gridspec(len(rows) + with_ratios, 3)
    for r, (d, s) in enumerate(rows):
        when = "at init (step 0)" if s == 0 else f"at step {s}"
        plot_activations(fig.add_subplot(gs[r, 0]), d["activations"], f"activations {when}")
        plot_grad_hists(fig.add_subplot(gs[r, 1]), d["out_grads"], f"gradients of layer outputs {when}")
        plot_grad_hists(fig.add_subplot(gs[r, 2]), d["weight_grads"], f"weight gradients {when}", "grad_data")
    if with_ratios:
        names = weight_ratio_names(result.variables["params"])
        plot_update_ratios(fig.add_subplot(gs[len(rows), :]), {k: result.update_ratios[k] for k in names})
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=80)
        plt.close(fig)
    return fig

