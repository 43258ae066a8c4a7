"""Training-health callbacks (DLVU "Tools of the trade", fast.ai 2018).

* :class:`GradNormCB` — the global gradient norm of every batch, computed inside the compiled step.
* :class:`NaNGuardCB` — stops the fit at the first non-finite loss / gradient / parameter, says which batch
  (epoch, iteration, optimizer step) and puts back the last good train state.
* :func:`nan_check` — DLVU's sanity check: a few steps at lr 0 and 1e-12; if those are NaN, it is a bug
  (data, loss, model), not the learning rate. The learner is left as it was.
* :class:`EarlyStoppingCB` — stop when a validation metric has not improved for ``patience`` epochs and
  (by default) go back to the best epoch's state; :class:`SaveBestCB` — export the best epoch's model to disk
  (both watch the metric through a :class:`Monitor`, as fastai's ``TrackerCallback``).
* :class:`SmoothedLossCB` — fast.ai's debiased exponentially smoothed loss (β = 0.98).

Per-batch numbers stay on the device until they are read (``norms``, ``smoothed``, ...), except in
:class:`NaNGuardCB`, which must look at its flags on the host to stop: it syncs once every ``every``
training calls (raise ``steps_per_call`` or ``every`` to make that cheaper).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlearn.callback import CancelFitException, Callback, LearnerLike, StepRecorder
from jaxlearn.optim.loss_scaling import loss_scale
from jaxlearn.step import StepContext
from jaxlearn.trees import copy_state, named_leaves, tree_all_finite

__all__ = ["GradNormCB", "NaNGuardCB", "nan_check", "NanCheckResult", "Monitor", "EarlyStoppingCB", "SaveBestCB",
           "SmoothedLossCB", "smooth"]


def smooth(values: Sequence[float] | np.ndarray, beta: float = 0.98) -> np.ndarray:
    """fast.ai's debiased EMA of ``values``: ``avg = β avg + (1-β) x``, reported as ``avg / (1 - β^(i+1))``
    (β: ``beta``)."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    values = np.asarray(values, dtype=np.float64)
    out, avg = np.empty_like(values), 0.0
    for i, v in enumerate(values):
        avg = beta * avg + (1 - beta) * v
        out[i] = avg / (1 - beta ** (i + 1))
    return out


class GradNormCB(StepRecorder):
    """Global gradient norm ``sqrt(sum of every gradient element squared)`` per training batch.

    Computed inside the compiled step (``optax.global_norm`` of the loss gradients, before the optimizer
    and any clipping); ``per_layer=True`` also keeps each parameter's norm. Read ``norms`` (T,) and
    ``layer_norms`` ({name: (T,)}) after the fit; ``plot(path)`` draws them.
    """

    def __init__(self, per_layer: bool = False):
        self.per_layer = per_layer

    @property
    def signature(self) -> tuple:
        """Whether per-layer norms are kept: equal ones share a compilation."""
        return (type(self), self.per_layer)

    def in_step(self, ctx: StepContext) -> dict:
        """The global norm of ``ctx.grads`` (and each parameter's with ``per_layer``), inside the step."""
        out = {"norm": optax.global_norm(ctx.grads)}
        if self.per_layer:
            out["layers"] = {k: jnp.sqrt(jnp.sum(jnp.square(v))) for k, v in named_leaves(ctx.grads).items()}
        return out

    @property
    def norms(self) -> np.ndarray:
        """The global gradient norm of every training batch of the fit, (T,)."""
        out = self.recorded
        return np.zeros(0) if out is None else out["norm"]

    @property
    def layer_norms(self) -> dict[str, np.ndarray]:
        """``{parameter path: (T,) norms}`` with ``per_layer`` (else empty)."""
        out = self.recorded
        return {} if out is None else dict(out.get("layers", {}))

    def plot(self, path: str | Path | None = None):
        """The norms per batch on a log scale; the figure, also saved to ``path`` when given."""
        import matplotlib.pyplot as plt
        from jaxlearn.callbacks.plots import save
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot(self.norms, lw=0.8, label="global")
        for name, v in self.layer_norms.items():
            ax.plot(v, lw=0.5, alpha=0.6, label=name)
        ax.set(xlabel="batch", ylabel="gradient norm", yscale="log", title="gradient norm per batch")
        if self.layer_norms and len(self.layer_norms) <= 12:
            ax.legend(fontsize=6)
        return save(fig, path)


class NaNGuardCB(Callback):
    """Stop the fit at the first non-finite loss, gradient or new train state, keeping the last good state.
    A float16 step that dynamic loss scaling skipped (its gradients overflowed, the scale was lowered) is not
    one, while the scale can still go lower.

    Inside the compiled step each batch reports four flags (loss / grads / new params / the rest of the new
    state — norm statistics, optimizer state — finite). Every
    ``every`` training calls (and at the end of each training epoch) the flags are read on the host; at the
    first bad batch the fit is cancelled (``CancelFitException``), ``learn.state`` is set back to the state
    at the last check — with ``every=1`` the state just before the call holding the bad batch; a device copy,
    since the compiled call reuses its input state's buffers — and ``message`` says where it happened, e.g.
    ``non-finite loss at epoch 0, iteration 7 (batch 8 of 40), optimizer step 7``. ``bad`` holds the same
    as a dict; both are None while training is healthy. ``verbose`` also prints the message (``learn.log``).
    """
    order = -5  # first in after_batch: nothing downstream sees the bad batch

    def __init__(self, every: int = 1, verbose: bool = True):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.every, self.verbose = every, verbose

    @property
    def signature(self) -> tuple:
        """Always the same: every NaNGuardCB shares a compilation."""
        return (type(self),)

    def in_step(self, ctx: StepContext) -> dict:
        """The batch's four flags: loss, gradients, new params and the rest of the new state finite."""
        # float16's dynamic loss scaling skips an overflowing step and lowers its scale: not a failure, unless
        # the scale can go no lower (jaxlearn.optim.loss_scaling)
        skipped = jnp.asarray(loss_scale(ctx.new_state.opt_state)) < jnp.asarray(loss_scale(ctx.state.opt_state))
        return {"loss": jnp.isfinite(ctx.loss), "grads": tree_all_finite(ctx.grads) | skipped,
                "params": tree_all_finite(ctx.new_params),
                "state": tree_all_finite((ctx.new_state.model_state, ctx.new_state.opt_state))}

    def before_fit(self, learn: LearnerLike) -> None:
        """Keep a copy of the starting state: the last good one until the first check."""
        self.message, self.bad = None, None
        self.good_state = copy_state(learn.state)  # the state before the unchecked calls
        self._pending: list = []       # (epoch, first iteration, n_batches, n_steps, device flags) per call

    def after_batch(self, learn: LearnerLike) -> None:
        """Queue the training call's flags; every ``every`` calls, check them (the one host sync)."""
        if learn.training:
            self._pending.append((learn.epoch, learn.iter, learn.dl.n_batches, learn.n_steps,
                                  learn.step_outputs[self]))
            if len(self._pending) >= self.every:
                self._check(learn)

    def after_epoch(self, learn: LearnerLike) -> None:
        """Check the flags still queued at the end of a training epoch."""
        if learn.training:
            self._check(learn)

    def _check(self, learn: LearnerLike) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            self.good_state = copy_state(learn.state)
            return
        flags = jax.device_get([p[-1] for p in pending])
        step = int(self.good_state.step)
        for (epoch, it, n_batches, n_steps, _), f in zip(pending, flags):
            ok = f["loss"] & f["grads"] & f["params"] & f["state"]
            if ok.all():
                step += n_steps
                continue
            k = int(np.argmin(ok))
            what = [name for name, v in (("loss", f["loss"]), ("gradients", f["grads"]), ("parameters", f["params"]),
                                         ("norm statistics or optimizer state", f["state"])) if not v[k]]
            self.bad = {"epoch": epoch, "iteration": it + k, "step": step + k, "what": what}
            learn.state = self.good_state  # every step before it came from finite numbers
            self.message = (f"NaNGuardCB: non-finite {' and '.join(what)} at epoch {epoch}, iteration {it + k} "
                            f"(batch {it + k + 1} of {n_batches}), optimizer step {step + k}; fit stopped, "
                            f"learn.state restored to step {int(self.good_state.step)} (the last good state)")
            if self.verbose:
                getattr(learn, "log", print)(self.message)
            raise CancelFitException(self.message)
        self.good_state = copy_state(learn.state)


@dataclass
class NanCheckResult:
    """What :func:`nan_check` saw: per learning rate, the loss (``losses``) and gradient norm (``grad_norms``) of
    each step. ``str(result)`` is the report :func:`nan_check` prints."""
    losses: dict[float, np.ndarray] = field(default_factory=dict)
    grad_norms: dict[float, np.ndarray] = field(default_factory=dict)

    @property
    def finite(self) -> dict[float, bool]:
        """``{lr: whether every loss and gradient norm at that lr was finite}``."""
        return {lr: bool(np.all(np.isfinite(self.losses[lr])) and np.all(np.isfinite(self.grad_norms[lr])))
                for lr in self.losses}

    @property
    def ok(self) -> bool:
        """Whether everything was finite at every learning rate (else: a bug, not the lr)."""
        return all(self.finite.values())

    def __str__(self) -> str:
        lines = []
        for lr, l in self.losses.items():
            state = "finite" if self.finite[lr] else "NON-FINITE"
            lines.append(f"lr={lr:g}: {len(l)} steps, loss {l[0]:.4g} -> {l[-1]:.4g}, "
                         f"grad norm {self.grad_norms[lr][0]:.4g} -> {self.grad_norms[lr][-1]:.4g} ({state})")
        verdict = ("ok: loss and gradients are finite at tiny learning rates" if self.ok else
                   "NaN/Inf at a tiny learning rate: this is a bug (data, loss or model), not the learning rate")
        return "\n".join(lines + [verdict])


class _LossAndGradNorm(StepRecorder):
    """Loss and gradient norm per step; cancels the fit after ``n_steps`` steps."""

    def __init__(self, n_steps: int):
        self.n_steps, self.done = n_steps, 0

    @property
    def signature(self) -> tuple:
        return (type(self),)

    def in_step(self, ctx: StepContext) -> dict:
        return {"loss": ctx.loss, "norm": optax.global_norm(ctx.grads)}

    def after_batch(self, learn: LearnerLike) -> None:
        super().after_batch(learn)
        self.done += learn.n_steps if learn.training else 0
        if self.done >= self.n_steps:
            raise CancelFitException()


def nan_check(learn: LearnerLike, n_steps: int = 3, lrs: Sequence[float] = (0.0, 1e-12),
              raise_error: bool = False, verbose: bool = True) -> NanCheckResult:
    """DLVU's check: train ``n_steps`` batches at each learning rate in ``lrs`` (0 and 1e-12) from the current
    state and report whether loss and gradients stay finite. At these rates the parameters (almost) do not
    move, so a NaN there comes from the data, the loss or the model — a bug, not a too-large lr.

    Only the learner's batch transforms take part (schedulers etc. would override the lr). Everything is put
    back afterwards: state (params, norm statistics, optimizer state, lr) and epoch counter of the Learner
    ``learn``. With ``raise_error`` a failed check raises ``FloatingPointError``; ``verbose`` prints the report
    (``learn.log``). Returns the :class:`NanCheckResult`.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be positive, got {n_steps}")
    result = NanCheckResult()
    for lr in lrs:
        with learn.trial():
            learn.set_hyper("learning_rate", lr)
            rec = _LossAndGradNorm(n_steps)
            learn.fit(math.ceil(n_steps / learn.dls.train.n_batches), valid=False, callbacks=[rec])
        result.losses[float(lr)] = rec.recorded["loss"][:n_steps]
        result.grad_norms[float(lr)] = rec.recorded["norm"][:n_steps]
    if verbose:
        getattr(learn, "log", print)(str(result))
    if raise_error and not result.ok:
        raise FloatingPointError(str(result))
    return result


class Monitor:
    """A metric watched over epochs: ``monitor`` names the pass and the metric ('valid_loss', 'train_accuracy',
    'valid_f1'...), ``mode`` 'min' / 'max' / 'auto' (max for accuracy, F1, AUC, precision and recall), and an
    improvement is a change of more than ``min_delta`` in the right direction. ``owner`` (the callback's name)
    heads its error messages. ``best`` and ``best_epoch`` hold the best value so far and its epoch."""

    def __init__(self, owner: str, monitor: str = "valid_loss", mode: str = "auto", min_delta: float = 0.0):
        prefix, _, metric = monitor.partition("_")
        if prefix not in ("train", "valid") or not metric:
            raise ValueError(f"{owner}: monitor must look like 'valid_loss' or 'train_accuracy', got {monitor!r}")
        if mode == "auto":
            mode = "max" if any(k in metric for k in ("acc", "f1", "auc", "precision", "recall")) else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"{owner}: mode must be 'min', 'max' or 'auto', got {mode!r}")
        self.owner, self.monitor, self.prefix, self.metric = owner, monitor, prefix, metric
        self.mode, self.min_delta = mode, abs(min_delta)
        self.reset()

    def reset(self) -> None:
        """Forget the best value (a new fit starts)."""
        self.best, self.best_epoch = (math.inf if self.mode == "min" else -math.inf), None

    def value(self, learn: LearnerLike) -> float | None:
        """The epoch's value, read from ``learn.epoch_metrics`` after the pass it watches (None after the other
        pass)."""
        if ("train" if learn.training else "valid") != self.prefix:
            return None
        if self.metric not in learn.epoch_metrics:
            raise KeyError(f"{self.owner}: no metric {self.metric!r} for {self.prefix}; "
                           f"have {sorted(learn.epoch_metrics)}")
        return learn.epoch_metrics[self.metric]

    def improved(self, value: float, epoch: int) -> bool:
        """Whether ``value`` beats the best so far (it then becomes the best, reached at ``epoch``)."""
        better = not math.isnan(value) and (value < self.best - self.min_delta if self.mode == "min"
                                            else value > self.best + self.min_delta)
        if better:
            self.best, self.best_epoch = value, epoch
        return better


class _Watching(Callback):
    """A callback whose ``watch`` (a :class:`Monitor`) follows one metric over the fit."""
    watch: Monitor

    @property
    def best(self) -> float:
        """The best value of the monitored metric in this fit."""
        return self.watch.best

    @property
    def best_epoch(self) -> int | None:
        """The epoch (in this fit) of the best value; None before one."""
        return self.watch.best_epoch


class EarlyStoppingCB(_Watching):
    """Stop the fit when ``monitor`` ('valid_loss', 'valid_accuracy', 'train_loss', ...) has not improved by
    more than ``min_delta`` for ``patience`` epochs. ``mode`` 'min' / 'max' / 'auto' (see :class:`Monitor`).

    With ``restore_best`` the learner ends the fit with the state of the best epoch (a device copy taken at
    each improvement). ``best``, ``best_epoch`` and ``stopped_epoch`` (None if it never stopped) say what happened;
    ``verbose`` prints why it stops. To keep the best model on disk as well, add :class:`SaveBestCB`.
    """
    order = 10  # after MetricsCB has logged the epoch

    def __init__(self, monitor: str = "valid_loss", patience: int = 3, min_delta: float = 0.0,
                 mode: str = "auto", restore_best: bool = True, verbose: bool = True):
        self.watch = Monitor("EarlyStoppingCB", monitor, mode, min_delta)
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.monitor, self.mode, self.patience = monitor, self.watch.mode, patience
        self.restore_best, self.verbose = restore_best, verbose

    def before_fit(self, learn: LearnerLike) -> None:
        """Start watching afresh."""
        self.watch.reset()
        self.best_state, self.stopped_epoch, self.wait = None, None, 0
        self.values: list[float] = []

    def after_epoch(self, learn: LearnerLike) -> None:
        """After the watched pass: keep a copy of an improved state, or stop after ``patience`` epochs without."""
        value = self.watch.value(learn)
        if value is None:
            return
        self.values.append(value)
        if self.watch.improved(value, learn.epoch):
            self.best_state, self.wait = copy_state(learn.state), 0
            self._fit_best = self.best_state
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = learn.epoch
            if self.verbose:
                getattr(learn, "log", print)(
                    f"EarlyStoppingCB: {self.monitor} has not improved on {self.best:.4f} (epoch {self.best_epoch})"
                    f" for {self.patience} epochs; stopping after epoch {learn.epoch}")
            raise CancelFitException()

    def cleanup_fit(self, learn: LearnerLike) -> None:
        """With ``restore_best``: put the best epoch's state back, however the fit ends."""
        # only a fit whose before_fit ran (an earlier callback may have failed first) has a best state to restore
        if self.restore_best and getattr(self, "_fit_best", None) is not None:
            learn.state = self.best_state
        self._fit_best = None


class SaveBestCB(_Watching):
    """Write the best model to disk: at every epoch where ``monitor`` improves, ``learn.export(path)`` (fastai's
    ``SaveModelCallback``), so ``load_learner(path)`` predicts with the best epoch's model even if the fit is
    killed later. ``mode`` and ``min_delta`` as :class:`Monitor`'s. With ``load_best`` the Learner ends the fit
    with that epoch's state. ``overwrite`` (default False): also replace a ``path`` that holds something other than
    a jaxlearn export (:meth:`~jaxlearn.learner.Learner.export`'s). ``best``, ``best_epoch`` and ``saved`` (the
    epochs written) say what happened."""
    order = 11  # after EarlyStoppingCB's decision, the epoch's metrics logged

    def __init__(self, path: str | os.PathLike, monitor: str = "valid_loss", mode: str = "auto",
                 min_delta: float = 0.0, load_best: bool = True, overwrite: bool = False):
        self.path, self.watch, self.load_best = Path(path), Monitor("SaveBestCB", monitor, mode, min_delta), load_best
        self.overwrite = overwrite  # replace a folder that is not a jaxlearn export (see Learner.export)
        self.saved: list[int] = []

    def before_fit(self, learn: LearnerLike) -> None:
        """Start watching afresh."""
        self.watch.reset()
        self.saved, self._best_state = [], None

    def after_epoch(self, learn: LearnerLike) -> None:
        """After the watched pass: export the model to ``path`` when the metric improved."""
        value = self.watch.value(learn)
        if value is not None and self.watch.improved(value, learn.epoch):
            learn.export(self.path, self.overwrite)
            self.saved.append(learn.epoch)
            if self.load_best:
                self._best_state = copy_state(learn.state)  # the next training call donates learn.state's buffers

    def cleanup_fit(self, learn: LearnerLike) -> None:
        """With ``load_best``: put the best epoch's state back, however the fit ends."""
        if self.load_best and getattr(self, "_best_state", None) is not None:
            learn.state = self._best_state
        self._best_state = None


class SmoothedLossCB(StepRecorder):
    """Every training batch's loss and fast.ai's debiased exponentially smoothed version (``beta`` = 0.98,
    :func:`smooth`).

    The raw losses stay on the device during the fit; ``raw`` and ``smoothed`` read them afterwards.
    """

    def __init__(self, beta: float = 0.98):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.beta = beta

    def record(self, learn: LearnerLike) -> jax.Array:
        """The training call's per-batch losses (on the device)."""
        return learn.losses

    @property
    def raw(self) -> np.ndarray:
        """Every training batch's loss in the fit."""
        out = self.recorded
        return np.zeros(0) if out is None else np.asarray(out)

    @property
    def smoothed(self) -> np.ndarray:
        """The debiased smoothed losses (:func:`smooth` of ``raw``)."""
        return smooth(self.raw, self.beta)

    def plot(self, path: str | Path | None = None):
        """The raw and smoothed losses per batch; the figure, also saved to ``path`` when given."""
        import matplotlib.pyplot as plt
        from jaxlearn.callbacks.plots import save
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot(self.raw, lw=0.5, alpha=0.4, label="per batch")
        ax.plot(self.smoothed, lw=1.2, label=f"smoothed (β={self.beta})")
        ax.set(xlabel="batch", ylabel="loss")
        ax.legend()
        return save(fig, path)
