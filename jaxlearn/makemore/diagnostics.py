"""makemore part 3's diagnostics, reduced on the device (nothing larger than a histogram leaves it): each tanh
layer's activations (mean, std, % saturated, histogram), the histogram of the gradient of each tanh layer's
output (``self.perturb``), each weight's gradient histogram and grad:data ratio (:class:`DiagnosticsCB`), and
the update:data ratio ``log10(std(lr·grad) / std(param))`` of every parameter at every step
(:class:`UpdateRatioCB`). Both are in-step callbacks of the one core: :func:`run_diagnostics` trains with them,
:func:`diagnose` takes one step of the same compiled step on given variables.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlearn import optim
from jaxlearn.callback import StepRecorder
from jaxlearn.callbacks import stats
from jaxlearn.data import DataLoaders
from jaxlearn.makemore.models import LECTURE_SEED, Tanh
from jaxlearn.makemore.training import lecture_learner, variables_of
from jaxlearn.step import StepContext, TrainState, make_train_step
from jaxlearn.trees import named_leaves

HIST_BINS = 100  # torch.histogram's default, as in the lecture's plots
"""Bins of the diagnostics' histograms (``torch.histogram``'s default, as in the lecture's plots)."""


def _signed_hist(x: jax.Array, bins: int = HIST_BINS, limit: jax.Array | None = None) -> dict[str, jax.Array]:
    """Histogram of x over [-r, r] (r = max|x| unless given), plus mean and std — all on the device."""
    x = x.astype(jnp.float32)
    r = jnp.max(jnp.abs(x)) if limit is None else jnp.asarray(limit, jnp.float32)
    r = jnp.maximum(r, 1e-30)
    return {"mean": x.mean(), "std": x.std(), "hist": stats.histogram(x, bins, (-r, r)), "range": r}


def _reduce_diagnostics(params, grads, acts, out_grads, bins: int = HIST_BINS) -> dict:
    """The lecture's numbers, reduced on the device: activations, output gradients, weight gradients."""
    act_stats = {}
    for name, a in acts.items():
        s = stats.summarize(a)
        act_stats[name] = {"mean": s["mean"], "std": s["std"], "saturated": s["saturated"],
                           **{k: v for k, v in _signed_hist(a, bins).items() if k in ("hist", "range")}}
    grad_stats = {name: _signed_hist(g, bins) for name, g in out_grads.items()}
    named_p, named_g = named_leaves(params), named_leaves(grads)
    weight_stats = {}
    for name, p in named_p.items():
        if p.ndim == 2 and min(p.shape) > 1:  # the lecture plots the 2-D parameters (C and the weights)
            g = named_g[name]
            weight_stats[name] = {**_signed_hist(g, bins), "shape": jnp.asarray(p.shape),
                                  "grad_data": stats.grad_data_ratio(g, p)}
    return {"activations": act_stats, "out_grads": grad_stats, "weight_grads": weight_stats}


def _tanh_outputs(out_grads: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """``{'Tanh_0': dL/d out}`` from the step's ``{'Tanh_0/out': ...}`` (each Tanh perturbs its output)."""
    return {k.rsplit("/out", 1)[0]: v for k, v in out_grads.items()}


class UpdateRatioCB(StepRecorder):
    """makemore's update:data ratio of every parameter at every step, ``log10(std(lr·grad) / std(param))``
    after the update, reduced inside the compiled step (``ratios``: ``{param: (steps,)}``)."""

    @property
    def signature(self) -> tuple:
        """Always the same: every UpdateRatioCB shares a compilation."""
        return (type(self),)

    def in_step(self, ctx: StepContext) -> dict:
        """Each parameter's ratio of the step's ``ctx.updates`` to the updated params, inside the step."""
        return stats.update_ratio(ctx.updates, ctx.new_params)

    @property
    def ratios(self) -> dict[str, np.ndarray]:
        """``{param: (steps,) log10 ratios}`` over the fit's training steps."""
        return dict(self.recorded or {})


class DiagnosticsCB(StepRecorder):
    """The lecture's per-layer diagnostics of every training step, reduced inside the compiled step: each tanh
    layer's activations (mean, std, % saturated, histogram), the gradient of each tanh output
    (``self.perturb``) and each 2-D weight's gradient histogram and grad:data ratio — measured on the step's
    batch before its update. ``at(i)`` is step i's, as host numbers (``diagnose``'s layout)."""
    capture = staticmethod(stats.module_filter(Tanh))
    perturb = True

    @property
    def signature(self) -> tuple:
        """Always the same: every DiagnosticsCB shares a compilation."""
        return (type(self),)

    def in_step(self, ctx: StepContext) -> dict:
        """The step's loss and its diagnostics from ``ctx`` (activations, output and weight gradients)."""
        return {"loss": ctx.loss, **_reduce_diagnostics(ctx.params, ctx.grads, ctx.intermediates,
                                                         _tanh_outputs(ctx.out_grads))}

    def at(self, i: int) -> dict:
        """The diagnostics of training step ``i`` of the fit, on the host."""
        return jax.tree.map(lambda a: a[i], self.recorded)



@functools.partial(jax.jit, static_argnames=("model", "return_tensors"))
def diagnose(model: nn.Module, variables: Mapping, xb: jax.Array, yb: jax.Array,
             return_tensors: bool = False) -> dict:
    """The lecture's diagnostics of ``model`` on one training batch ``(xb, yb)`` (train-mode forward and
    backward), reduced on device: one step of the core's train step with :class:`DiagnosticsCB`'s hook, on
    ``variables`` as they are.

    Returns ``{'loss', 'activations': {layer: mean, std, saturated, hist, range}, 'out_grads': {layer: mean,
    std, hist, range}, 'weight_grads': {param: mean, std, hist, range, shape, grad_data}}``; histograms have
    :data:`HIST_BINS` bins over ``[-range, range]``. ``return_tensors=True`` also returns the raw tensors
    (``'tensors'``: acts, out_grads, grads) — for tests only.
    """
    cb = DiagnosticsCB()
    hooks = {"diagnostics": cb.in_step}
    if return_tensors:
        hooks["tensors"] = lambda ctx: {"acts": ctx.intermediates, "out_grads": _tanh_outputs(ctx.out_grads),
                                        "grads": ctx.grads}
    state = TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                       model_state={"batch_stats": variables.get("batch_stats", {})}, opt_state=optax.EmptyState(),
                       rng=jax.random.key(0), apply_fn=model.apply, tx=optax.identity())
    step = make_train_step(capture=cb.capture, hooks=hooks, perturb=True)
    _, out = step(state, (xb, yb, jnp.ones(len(yb), jnp.float32)))
    return {**out["diagnostics"], **({"tensors": out["tensors"]} if return_tensors else {})}


@dataclass
class DiagnosticRun:
    """What :func:`run_diagnostics` returns: the trained ``variables``, per-step ``losses`` and update:data ratios
    (``update_ratios``, by parameter), and the full ``diagnostics`` of the first and the last step (their
    indices: ``diagnostic_steps``)."""
    variables: dict
    losses: np.ndarray
    update_ratios: dict[str, np.ndarray]
    diagnostics: list[dict]
    diagnostic_steps: list[int]


def run_diagnostics(model: nn.Module, dls: DataLoaders, steps: int = 1000, lr: float = 0.1,
                    seed: int = LECTURE_SEED) -> DiagnosticRun:
    """The lecture's debugging run of the deep net ``model`` on ``dls``: ``steps`` SGD steps at a constant ``lr``
    in one compiled call (from ``seed``), with :class:`UpdateRatioCB` and :class:`DiagnosticsCB` in the step;
    ``diagnostics[0]`` is at init (the first batch, before its update), ``diagnostics[-1]`` the last batch's."""
    dls = DataLoaders(dataclasses.replace(dls.train, batches_per_epoch=steps), dls.valid, dls.info)
    ratios, diag = UpdateRatioCB(), DiagnosticsCB()
    learn = lecture_learner(model, dls, seed, steps_per_call=steps,
                            optimizer=functools.partial(optim.sgd, learning_rate=lr))
    learn.fit(1, valid=False, callbacks=[ratios, diag])
    last = [steps - 1] if steps > 1 else []
    return DiagnosticRun(variables_of(learn), diag.recorded["loss"], ratios.ratios,
                         [diag.at(i) for i in [0, *last]], [0, *last])


def summary_table(diag: Mapping) -> list[dict]:
    """Per tanh layer of the diagnostics ``diag`` (:func:`diagnose`'s layout): mean, std, % saturated,
    output-gradient std — plain floats (for JSON / printing)."""
    rows = []
    for name, s in diag["activations"].items():
        g = diag["out_grads"].get(name, {})
        rows.append({"layer": name, "mean": float(s["mean"]), "std": float(s["std"]),
                     "saturated_pct": 100 * float(s["saturated"]),
                     "grad_std": float(g["std"]) if g else float("nan")})
    return rows


def weight_ratio_names(params: Mapping) -> list[str]:
    """Names of the 2-D parameters of ``params`` (C and the Linear weights), the ones the lecture plots."""
    return [k for k, v in named_leaves(params).items() if np.ndim(v) == 2 and min(np.shape(v)) > 1]

