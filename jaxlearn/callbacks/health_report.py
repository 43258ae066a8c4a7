"""The training-health report: what is wrong, where, what to try, and where the courses teach it.

A :class:`Finding` names one problem (a stable id of :data:`PROBLEMS`), its ``severity``, the ``layer`` (a flax
path, or None for the whole model), the ``evidence`` (the measured numbers and the threshold they crossed), the
``remedy`` written as the jaxlearn call to try, and the ``lesson``. A :class:`HealthReport` holds the findings of
one diagnosis, what it could not check, and what it saw; it prints as a table, round-trips through JSON and draws
one panel per finding with the offending layers highlighted.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from jaxlearn.callbacks.loggers import strict_dumps

SEVERITIES = ("warning", "critical")

# problem id: (what it means, the remedy as the jaxlearn call to try, where the course teaches it)
PROBLEMS: dict[str, tuple[str, str, str]] = {
    "unnormalized_input": (
        "the model's input is far from mean 0 / std 1",
        "BatchTransformCB(normalize(mean, std)) with the training set's statistics (the evidence's)",
        "fast.ai 2022 lesson 17: input normalization (Kaiming init 70% -> 85% with it)"),
    "high_initial_loss": (
        "the loss at init is far above chance: confident, wrong logits",
        "scale the last layer's weights down (x0.01) and zero its bias, so the first predictions are uniform",
        "makemore part 3: fixing the initial loss, 27 -> 3.29"),
    "dead_units": (
        "units that never fire over the window (ReLU in its flat part for every example)",
        "kaiming_normal(a=leak) init, GeneralRelu(leak=0.1, sub=0.4), a lower lr (learn.lr_find()), BatchNorm",
        "fast.ai 2022 lesson 17: dead_chart, Kaiming init and GeneralRelu"),
    "saturated_units": (
        "tanh / sigmoid outputs pinned near their limits, where the gradient vanishes",
        "a smaller init (kaiming_normal, gain 5/3 for tanh), BatchNorm before the nonlinearity",
        "makemore part 3: tanh saturation above |h| > 0.97, Kaiming gain 5/3, BatchNorm"),
    "vanishing_activations": (
        "activations shrink layer over layer",
        "kaiming_normal init (or lsuv), BatchNorm / LayerNorm",
        "fast.ai 2022 lesson 17: color_dim collapsing; makemore part 3: gain too small"),
    "exploding_activations": (
        "activations grow layer over layer",
        "kaiming_normal init (or lsuv), BatchNorm / LayerNorm",
        "makemore part 3: gain too large; fast.ai 2022 lesson 17: LSUV"),
    "vanishing_gradients": (
        "the gradient is orders of magnitude smaller in the first layers than in the last",
        "ReLU / GeneralRelu instead of sigmoid, kaiming_normal init, BatchNorm, residual connections",
        "DLVU Tools of the trade: vanishing gradients (the sigmoid's 0.25), residuals"),
    "exploding_gradients": (
        "the gradient norm blows up (or, in an RNN, grows back through time)",
        "optax.clip_by_global_norm(1.0) chained before the optimizer, a lower lr; for RNNs also a smaller bptt",
        "DLVU Tools of the trade: gradient clipping; fast.ai 2018 lesson 6-7: RNNs need clipping"),
    "update_ratio_high": (
        "each step changes the weights by a large part of their size (log10 update:data far above -3)",
        "a lower lr: learn.lr_find() and its valley, or warmup (optim.warmup_cosine)",
        "makemore part 3: the update:data ratio, log10 about -3"),
    "update_ratio_low": (
        "each step barely changes the weights (log10 update:data far below -3)",
        "a higher lr: learn.lr_find() and its valley",
        "makemore part 3: the update:data ratio, log10 about -3"),
    "diverged": (
        "a loss, gradient or parameter is NaN or infinite",
        "a lower lr (learn.lr_find()), optax.clip_by_global_norm(1.0), and nan_check(learn) for data bugs",
        "DLVU Tools of the trade: lr 0 / 1e-12 NaN check, clipping"),
    "outputs_are_probabilities": (
        "the model's outputs are already probabilities (a softmax at its end), and cross_entropy applies softmax "
        "again: the loss has a floor and the gradient is small",
        "return logits: drop the model's last softmax (jaxlearn's cross_entropy takes logits)",
        "DLVU Tools of the trade: check the loss at init (log C) and what the loss function expects"),
    "not_learning": (
        "the loss stays near its chance level (what predicting the label frequencies / the mean scores)",
        "a higher lr (learn.lr_find()); check that labels and inputs are paired (not shuffled apart)",
        "DLVU Tools of the trade: overfit one batch first; fast.ai: the lr finder"),
    "oscillating_loss": (
        "the loss jumps up and down instead of falling",
        "a lower lr (learn.lr_find()'s valley), warmup (optim.warmup_cosine), optax.clip_by_global_norm(1.0)",
        "fast.ai 2018 lesson 1: the lr finder; DLVU Tools of the trade: warmup"),
    "overfitting": (
        "the validation loss rises while the training loss falls",
        "Dropout, weight decay (optim.adamw), augmentation (vision.AugmentCB), EarlyStoppingCB",
        "DLVU Tools of the trade: regularization; fast.ai 2018 lesson 4: dropout"),
}


@dataclass(frozen=True)
class Finding:
    """One problem found: see the module docstring."""
    problem: str
    severity: str
    layer: str | None
    evidence: dict[str, Any]
    remedy: str
    lesson: str
    step: int | None = None  # the optimizer step by which it showed (None: not dated)

    def __post_init__(self):
        if self.problem not in PROBLEMS:
            raise ValueError(f"unknown problem {self.problem!r}: known are {sorted(PROBLEMS)}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")


def finding(problem: str, severity: str, layer: str | None, evidence: dict[str, Any], remedy: str | None = None,
            step: int | None = None) -> Finding:
    """A :class:`Finding` with the problem's standard remedy (or a more specific one) and lesson."""
    if problem not in PROBLEMS:
        raise ValueError(f"unknown problem {problem!r}: known are {sorted(PROBLEMS)}")
    _, standard, lesson = PROBLEMS[problem]
    return Finding(problem, severity, layer, evidence, remedy or standard, lesson, step)


# The order to fix things in, upstream first: what the data and the loss see, then the lr when it blows the
# weights up, then the init's activations, which a too-small lr or bad activations in turn starve of updates.
CAUSAL_ORDER = ("outputs_are_probabilities", "unnormalized_input", "high_initial_loss", "update_ratio_high",
                "diverged", "saturated_units", "dead_units", "exploding_activations", "vanishing_activations",
                "update_ratio_low", "exploding_gradients", "vanishing_gradients", "not_learning", "oscillating_loss",
                "overfitting")
FROM_THE_START = 10  # findings dated within the first steps were there from the start: the init, data, loss or lr


def _likely_cause_first(f: Finding) -> tuple:
    later = f.step is None or f.step >= FROM_THE_START
    return (later, CAUSAL_ORDER.index(f.problem), -SEVERITIES.index(f.severity),
            f.step if f.step is not None else math.inf)


@dataclass
class HealthReport:
    """The findings of one diagnosis, the likely cause first (those there from the start before those that showed
    later, then upstream before downstream: :data:`CAUSAL_ORDER`), what could not be checked, and what was seen
    (``seen``: steps, chance loss, the layers measured, per-layer numbers...).

    ``findings``: the :class:`Finding`\\ s (sorted on construction); ``not_checked``: one line per rule that could
    not run and why (integer inputs, no activation found, no chance level, no finished epoch); ``seen``: what
    :func:`~jaxlearn.callbacks.health.summarize` kept. All empty by default: a healthy report."""
    findings: list[Finding] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)
    seen: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.findings = sorted(self.findings, key=_likely_cause_first)

    @property
    def problems(self) -> set[str]:
        """The ids of the problems found."""
        return {f.problem for f in self.findings}

    @property
    def healthy(self) -> bool:
        """No finding at all (not even a warning)."""
        return not self.findings

    @property
    def critical(self) -> list[Finding]:
        """The findings of severity ``"critical"``, the likely cause first."""
        return [f for f in self.findings if f.severity == "critical"]

    def to_json(self, indent: int | None = 1) -> str:
        """Strict JSON (non-finite numbers as null, recorded under ``non_finite``)."""
        return strict_dumps({"healthy": self.healthy, "findings": [asdict(f) for f in self.findings],
                             "not_checked": self.not_checked, "seen": self.seen}, indent)[0]

    @classmethod
    def from_json(cls, text: str) -> "HealthReport":
        """The report :meth:`to_json` wrote (its ``non_finite`` records dropped: those numbers come back as None)."""
        data = json.loads(text)
        strip = lambda d: {k: v for k, v in d.items() if k != "non_finite"}  # noqa: E731
        return cls([Finding(**{**f, "evidence": strip(f["evidence"])}) for f in data["findings"]],
                   list(data["not_checked"]), strip(data["seen"]))

    def __str__(self) -> str:
        head = f"Training health: {'healthy' if self.healthy else f'{len(self.findings)} finding(s)'}" + (
            f" after {self.seen['steps']} steps" if "steps" in self.seen else "")
        lines = [head]
        for f in self.findings:
            where = f" in {f.layer}" if f.layer else ""
            at = f" by step {f.step}" if f.step is not None else ""
            evidence = ", ".join(f"{k} {_fmt(v)}" for k, v in f.evidence.items())
            lines += [f"- [{f.severity}] {f.problem}{where}{at}: {PROBLEMS[f.problem][0]}",
                      f"    evidence: {evidence}", f"    try: {f.remedy}", f"    lesson: {f.lesson}"]
        if self.not_checked:
            lines.append("Not checked: " + "; ".join(self.not_checked))
        return "\n".join(lines)

    def plot(self, path: str | Path | None = None):
        """One panel per finding: the measured quantity per layer (or over steps), the offending layers in red
        and the threshold as a dashed line. Returns the figure (saved to ``path`` when given)."""
        return plot_health(self, path)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)) and len(v) > 6:
        return "[" + ", ".join(_fmt(x) for x in v[:6]) + ", ...]"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


class _Thresholds:
    """The thresholds a report was made with, by attribute (a missing one: no line drawn)."""

    def __init__(self, values: Mapping[str, Any]):
        self.values = dict(values)

    def __getattr__(self, name: str) -> Any:
        v = self.values.get(name)
        return tuple(v) if isinstance(v, list) else v


def _bars(ax, values: Mapping[str, float], bad: str | None, ylabel: str, threshold: float | None = None,
          log: bool = False) -> None:
    """One bar per layer, the finding's layer in red, the threshold dashed."""
    names = list(values)
    ax.bar(range(len(names)), [values[n] for n in names],
           color=["tab:red" if n == bad else "tab:blue" for n in names])
    ax.set_xticks(range(len(names)), [n.replace("/", "/\n") for n in names], fontsize=6, rotation=45, ha="right")
    ax.set(ylabel=ylabel, yscale="log" if log else "linear")
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
        ax.legend(fontsize=7)


def plot_health(report: HealthReport, path: str | Path | None = None):
    """One panel per finding: the quantity the rule read, per layer (the finding's layer in red) or over the
    training steps, with its threshold dashed (the thresholds the diagnosis used, from ``seen``)."""
    import matplotlib.pyplot as plt
    from jaxlearn.callbacks.plots import save
    seen = report.seen
    t = _Thresholds(seen.get("thresholds", {}))
    panels = report.findings or [None]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.2 * len(panels)), squeeze=False)
    for ax, f in zip(axes[:, 0], panels):
        problem = f.problem if f is not None else None
        layer = f.layer if f is not None else None
        if problem == "dead_units":
            _bars(ax, seen.get("dead_units", {}), layer, "share of units dead", t.dead_share)
        elif problem == "saturated_units":
            _bars(ax, seen.get("saturated", {}), layer, "share of activations saturated", t.saturated_share)
        elif problem in ("vanishing_activations", "exploding_activations"):
            _bars(ax, seen.get("activation_std", {}), layer, "activation std", log=True)
        elif problem in ("update_ratio_high", "update_ratio_low"):
            _bars(ax, seen.get("log10_update_data", {}), layer, "log10 update:data",
                  t.update_ratio_high if problem == "update_ratio_high" else t.update_ratio_low)
            ax.axhline(-3, color="g", ls=":", lw=1)
        elif problem == "vanishing_gradients":
            _bars(ax, seen.get("grad_rms", {}), layer, "gradient RMS", log=True)
        elif problem == "exploding_gradients" and layer in seen.get("hidden_grads", {}):
            g = seen["hidden_grads"][layer]
            ax.plot(range(len(g)), g, "o-", color="tab:red")
            ax.set(xlabel="time step t of the window", ylabel="‖∂L/∂h_t‖", yscale="log")
        elif problem == "exploding_gradients":
            ax.plot(seen["grad_norm"]["step"], seen["grad_norm"]["value"], color="tab:red")
            ax.set(xlabel="optimizer step", ylabel="gradient norm", yscale="log")
        elif problem == "unnormalized_input":
            stats = seen.get("inputs", [{}])[0]
            _bars(ax, {k: stats.get(k, 0.0) for k in ("mean", "std", "min", "max")}, None, "input statistic")
            if t.input_std:
                ax.axhspan(*t.input_std, color="g", alpha=0.1, label="std wanted")
        elif problem == "overfitting":
            epochs = [r["epoch"] for r in seen["epochs"] if "valid_loss" in r]
            for key in ("train_loss", "valid_loss"):
                ax.plot(epochs, [r[key] for r in seen["epochs"] if "valid_loss" in r], "o-", label=key)
            ax.set(xlabel="epoch", ylabel="loss")
            ax.legend(fontsize=7)
        else:  # the loss stream: initial loss, learning, oscillation, divergence, or a healthy run
            ax.plot(seen["loss"]["step"], seen["loss"]["value"], lw=0.8, label="training loss (per batch)")
            if seen.get("chance") is not None:
                ax.axhline(seen["chance"], color="k", ls="--", lw=1, label=f"chance {seen['chance']:.3g}")
            ax.set(xlabel="optimizer step", ylabel="loss")
            ax.legend(fontsize=7)
        ax.set_title(f"[{f.severity}] {problem}" + (f" in {layer}" if layer else "") if f is not None
                     else "healthy: no finding", fontsize=9)
    fig.tight_layout()
    return save(fig, path)
