"""The Learner's everyday callbacks (miniai's, one idea per class).

Per-batch numbers stay on the device as arrays until a callback needs them on the host (at the end of an
epoch or of the fit), so callbacks never stall the asynchronous dispatch of compiled steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import flax.linen as nn

from jaxlearn.learner import CancelEpochException, CancelFitException, Callback, Learner, StepContext
from jaxlearn.stats import N_BINS, module_filter, summarize

__all__ = ["Callback", "MetricsCB", "ProgressCB", "SingleBatchCB", "BatchTransformCB", "ParamSchedulerCB",
           "RecorderCB", "ActivationStats", "LRFinderCB", "lr_find"]


class MetricsCB(Callback):
    """Keeps ``history`` (one row per epoch: train/valid loss and accuracy, seconds) and prints the table."""
    order = 1

    def __init__(self, show: bool = True):
        self.show = show

    def before_fit(self, learn: Learner) -> None:
        self.history: list[dict] = []
        self._printed_header = False

    def before_epoch(self, learn: Learner) -> None:
        if learn.training or not self.history or "valid_loss" in self.history[-1]:
            self.history.append({"epoch": learn.epoch})
        self._t0 = time.perf_counter()

    def after_epoch(self, learn: Learner) -> None:
        row, prefix = self.history[-1], "train" if learn.training else "valid"
        for k, v in learn.epoch_metrics.items():
            row[f"{prefix}_{k}"] = v
        row[f"{prefix}_seconds"] = time.perf_counter() - self._t0
        if not learn.training and self.show:
            self._print(learn, row)

    def after_fit(self, learn: Learner) -> None:
        if self.show and self.history and "valid_loss" not in self.history[-1]:
            self._print(learn, self.history[-1])

    def _print(self, learn: Learner, row: dict) -> None:
        cols = [k for k in row if not k.endswith("seconds")] + ["seconds"]
        if not self._printed_header:
            getattr(learn, "log", print)(" ".join(f"{c:>14}" for c in cols))
            self._printed_header = True
        seconds = row.get("train_seconds", 0.0) + row.get("valid_seconds", 0.0)
        values = [row[c] if c != "seconds" else seconds for c in cols]
        getattr(learn, "log", print)(" ".join(f"{v:>14.4f}" if isinstance(v, float) else f"{v:>14}"
                                              for v in values))


class ProgressCB(Callback):
    """tqdm bars for epochs and batches; per-batch training losses kept (``losses``) and optionally plotted."""
    order = MetricsCB.order + 1

    def __init__(self, plot_path: str | Path | None = None, leave: bool = False):
        self.plot_path, self.leave = plot_path, leave

    def before_fit(self, learn: Learner) -> None:
        from tqdm.auto import tqdm
        self._tqdm = tqdm
        self.epoch_bar = tqdm(total=learn.n_epochs, desc="epochs", leave=self.leave)
        learn.log = self.epoch_bar.write
        self._chunks: list[jax.Array] = []
        self.valid_losses: list[tuple[int, float]] = []

    def before_epoch(self, learn: Learner) -> None:
        total = learn.dl.n_batches if learn.training else 1
        self.batch_bar = self._tqdm(total=total, desc="train" if learn.training else "valid", leave=False)

    def after_batch(self, learn: Learner) -> None:
        self.batch_bar.update(learn.n_steps if learn.training else 1)
        if learn.training:
            self._chunks.append(learn.loss)

    def after_epoch(self, learn: Learner) -> None:
        self.batch_bar.close()
        if learn.training:
            self.epoch_bar.update(1)
        else:
            self.valid_losses.append((len(self.losses), learn.epoch_metrics["loss"]))

    @property
    def losses(self) -> np.ndarray:
        """Every training batch's loss so far (one device→host copy)."""
        return np.asarray(jnp.concatenate(self._chunks)) if self._chunks else np.zeros(0)

    def cleanup_fit(self, learn: Learner) -> None:
        self.epoch_bar.close()
        learn.log = print
        if self.plot_path is not None and self._chunks:
            from jaxlearn.plots import plot_losses
            plot_losses(self.losses, self.valid_losses, path=self.plot_path)


class SingleBatchCB(Callback):
    """Run one training call and stop: a quick check that everything is wired up."""
    order = 1

    def after_batch(self, learn: Learner) -> None:
        raise CancelFitException()


class BatchTransformCB(Callback):
    """Apply ``tfm`` to the inputs inside the compiled step (e.g. ``data.normalize(0.28, 0.35)``)."""

    def __init__(self, tfm: Callable[[jax.Array], jax.Array], on_train: bool = True, on_val: bool = True):
        self.tfm, self.on_train, self.on_val = tfm, on_train, on_val

    def batch_transform(self, x: jax.Array, training: bool, key: jax.Array) -> jax.Array:
        return self.tfm(x) if (self.on_train if training else self.on_val) else x


class ParamSchedulerCB(Callback):
    """Set an injected hyperparameter before each training call from a schedule over the fit's steps.

    ``make_schedule(total_steps)`` returns ``schedule(step) -> value`` (any optax schedule, or one from
    ``jaxlearn.schedules``); only the hyperparameter's value changes, so nothing is recompiled.
    """

    def __init__(self, name: str, make_schedule: Callable[[int], Callable[[int], float]]):
        self.name, self.make_schedule = name, make_schedule

    def before_fit(self, learn: Learner) -> None:
        self.schedule = self.make_schedule(learn.n_epochs * learn.dls.train.n_batches)
        self.step = learn.fit_epochs_done * learn.dls.train.n_batches  # a resumed fit continues its schedule

    def before_batch(self, learn: Learner) -> None:
        if learn.training:
            learn.set_hyper(self.name, float(self.schedule(self.step)))
            self.step += learn.n_steps


class RecorderCB(Callback):
    """Record injected hyperparameters (e.g. 'learning_rate', 'momentum') at every training call."""
    order = ParamSchedulerCB.order + 1

    def __init__(self, *names: str):
        self.names = names

    def before_fit(self, learn: Learner) -> None:
        self.recs: dict[str, list[float]] = {n: [] for n in self.names}

    def before_batch(self, learn: Learner) -> None:
        if learn.training:
            for n in self.names:
                self.recs[n].append(learn.get_hyper(n))

    def plot(self, path: str | Path | None = None):
        from jaxlearn.plots import plot_series
        return plot_series(self.recs, xlabel="training call", path=path)


class ActivationStats(Callback):
    """miniai's ``ActivationStats``, computed inside the compiled step from flax's intermediates collection.

    ``ActivationStats(GeneralRelu)`` follows every GeneralRelu; ``names=`` picks modules by name. Per
    layer and training batch it keeps mean, std, a 40-bin |x| histogram on [0, 10], the "dead" fraction
    (lowest bin) and the "saturated" fraction (|x| > 0.97) — nothing bigger leaves the device.
    ``signed=True`` adds a signed histogram on [-5, 5] (a second scatter over every activation, so opt-in).
    """

    def __init__(self, *types: type[nn.Module], names: tuple[str, ...] = (), bins: int = N_BINS,
                 signed: bool = False):
        if not types and not names:
            raise ValueError("ActivationStats needs module types and/or names to follow")
        self.capture = module_filter(*types, names=names)
        self.bins, self.signed = bins, signed

    def in_step(self, ctx: StepContext) -> dict:
        return {name: summarize(x, self.bins, signed=self.signed) for name, x in ctx.intermediates.items()}

    def before_fit(self, learn: Learner) -> None:
        self._chunks: list[dict] = []

    def after_batch(self, learn: Learner) -> None:
        if learn.training:
            self._chunks.append(learn.step_outputs[self])

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        """``{layer: {'mean': (T,), 'std': (T,), 'hist': (T, 40), ...}}`` over the T training batches."""
        if not self._chunks:
            return {}
        return jax.tree.map(lambda *xs: np.concatenate(xs), *jax.device_get(self._chunks))

    def plot_stats(self, path=None):
        from jaxlearn.plots import plot_stats
        return plot_stats(self.stats, path=path)

    def color_dim(self, path=None):
        from jaxlearn.plots import color_dim
        return color_dim(self.stats, path=path)

    def dead_chart(self, path=None):
        from jaxlearn.plots import dead_chart
        return dead_chart(self.stats, path=path)


class LRFinderCB(Callback):
    """Leslie Smith's range test (fast.ai): lr grows by ``gamma`` per batch from ``start_lr``.

    Records the debiased exponentially smoothed loss (β = 0.98, fast.ai 2018) and stops once it exceeds
    ``max_mult`` × its minimum (or turns NaN).
    """

    def __init__(self, start_lr: float = 1e-5, gamma: float = 1.3, max_mult: float = 3.0, beta: float = 0.98):
        if start_lr <= 0 or gamma <= 1 or max_mult <= 1 or not 0 <= beta < 1:
            raise ValueError("LRFinderCB needs start_lr > 0, gamma > 1, max_mult > 1 and 0 <= beta < 1")
        self.start_lr, self.gamma, self.max_mult, self.beta = start_lr, gamma, max_mult, beta

    def before_fit(self, learn: Learner) -> None:
        self.lrs, self.losses, self.min, self._avg = [], [], math.inf, 0.0

    def before_batch(self, learn: Learner) -> None:
        if learn.training:
            learn.set_hyper("learning_rate", self.start_lr * self.gamma ** len(self.lrs))

    def after_batch(self, learn: Learner) -> None:
        if not learn.training:
            raise CancelEpochException()
        loss = float(np.asarray(learn.loss).mean())  # this finder needs each loss on the host to decide
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smoothed = self._avg / (1 - self.beta ** (len(self.losses) + 1))
        self.lrs.append(self.start_lr * self.gamma ** len(self.lrs))
        self.losses.append(smoothed)
        self.min = min(self.min, smoothed)
        if math.isnan(smoothed) or smoothed > self.max_mult * self.min:
            raise CancelFitException()

    @property
    def suggestion(self) -> float:
        """fast.ai 2018's rule of thumb: a tenth of the lr at the smoothed loss's minimum."""
        return self.lrs[int(np.nanargmin(self.losses))] / 10


def lr_find(learn: Learner, start_lr: float = 1e-5, gamma: float = 1.3, max_mult: float = 3.0,
            max_epochs: int = 10, plot_path: str | Path | None = None,
            callbacks: Sequence[Callback] = ()) -> LRFinderCB:
    """Run the range test on ``learn`` and put everything back: params, norm stats, optimizer, lr, epochs.

    Of the Learner's own callbacks only the input transforms take part; ``callbacks`` join the search.

    Returns the finder with ``lrs``, ``losses`` (smoothed) and ``suggestion``.
    """
    saved = learn.state, learn.epochs_done, learn.steps_per_call, learn.callbacks  # pytrees are immutable
    finder = LRFinderCB(start_lr, gamma, max_mult)
    try:
        learn.steps_per_call = 1  # the finder sets the lr and reads the loss once per batch
        # Metrics, recorders, schedulers and checkpoints of the real training sit the search out.
        learn.callbacks = [cb for cb in learn.callbacks if hasattr(cb, "batch_transform")]
        learn.fit(max_epochs, valid=False, callbacks=[*callbacks, finder])
    finally:
        learn.state, learn.epochs_done, learn.steps_per_call, learn.callbacks = saved
    if plot_path is not None:
        from jaxlearn.plots import plot_lr_find
        plot_lr_find(finder.lrs, finder.losses, finder.suggestion, path=plot_path)
    return finder
