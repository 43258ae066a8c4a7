"""The Learner's everyday callbacks (miniai's, one idea per class).

Per-batch numbers stay on the device as arrays until a callback needs them on the host (at the end of an
epoch or of the fit), so callbacks never stall the asynchronous dispatch of compiled steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import flax.linen as nn

from jaxlearn.learner import CancelEpochException, CancelFitException, Callback, Learner, StepRecorder
from jaxlearn.monitor import smooth
from jaxlearn.optim import freeze_to, trainable_flags
from jaxlearn.stats import N_BINS, module_filter, summarize
from jaxlearn.step import StepContext

__all__ = ["Callback", "MetricsCB", "ProgressCB", "SingleBatchCB", "BatchTransformCB", "ParamSchedulerCB",
           "RecorderCB", "ActivationStats", "LRFinderCB", "lr_find", "LayerGroupsCB"]


class MetricsCB(Callback):
    """Keeps ``history`` (one row per epoch: train/valid loss and accuracy, seconds) and prints the table."""
    order = 1

    def __init__(self, show: bool = True):
        self.show = show

    def before_fit(self, learn: Learner) -> None:
        # a fit resumed from a checkpoint starts from the rows the checkpoint kept
        self.history: list[dict] = [dict(r) for r in getattr(learn, "resumed_history", None) or []]
        learn.resumed_history = None
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


class ProgressCB(StepRecorder):
    """tqdm bars for epochs and batches; per-batch training losses kept (``losses``) and optionally plotted."""
    order = MetricsCB.order + 1

    def __init__(self, plot_path: str | Path | None = None, leave: bool = False):
        self.plot_path, self.leave = plot_path, leave
        self.epoch_bar = self.batch_bar = None

    def before_fit(self, learn: Learner) -> None:
        super().before_fit(learn)
        from tqdm.auto import tqdm
        self._tqdm = tqdm
        self.epoch_bar = tqdm(total=learn.n_epochs, desc="epochs", leave=self.leave)
        learn.log = self.epoch_bar.write
        self.valid_losses: list[tuple[int, float]] = []
        self._n_train = 0

    def before_epoch(self, learn: Learner) -> None:
        total = learn.dl.n_batches if learn.training else 1
        self.batch_bar = self._tqdm(total=total, desc="train" if learn.training else "valid", leave=False)

    def record(self, learn: Learner) -> jax.Array:
        return learn.loss

    def after_batch(self, learn: Learner) -> None:
        super().after_batch(learn)
        self.batch_bar.update(learn.n_steps if learn.training else 1)
        self._n_train += learn.n_steps if learn.training else 0

    def after_epoch(self, learn: Learner) -> None:
        self.batch_bar.close()
        if learn.training:
            self.epoch_bar.update(1)
        else:
            self.valid_losses.append((self._n_train, learn.epoch_metrics["loss"]))

    @property
    def losses(self) -> np.ndarray:
        """Every training batch's loss so far (one device→host copy)."""
        out = self.recorded
        return np.zeros(0) if out is None else np.asarray(out)

    def cleanup_fit(self, learn: Learner) -> None:
        for bar in (self.batch_bar, self.epoch_bar):
            if bar is not None:  # before_fit may not have run (an earlier callback failed)
                bar.close()
        learn.log = print
        if self.plot_path is not None and getattr(self, "_chunks", None):
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

    @property
    def signature(self) -> tuple:
        return (type(self), self.tfm, self.on_train, self.on_val)

    def batch_transform(self, x: jax.Array, training: bool, key: jax.Array) -> jax.Array:
        return self.tfm(x) if (self.on_train if training else self.on_val) else x


class ParamSchedulerCB(Callback):
    """Schedule an injected hyperparameter over the fit's steps, evaluated inside the compiled step.

    ``make_schedule(total_steps)`` returns ``schedule(step) -> value`` (any optax schedule, or one from
    ``jaxlearn.schedules``), written with ``jnp`` so it traces; ``step`` counts the fit's training steps
    (a fit resumed from a checkpoint continues its schedule). Only the hyperparameter's value changes, on the
    device, from the step counter: no host round trip per batch.
    """

    def __init__(self, name: str, make_schedule: Callable[[int], Callable[[jax.Array], jax.Array]]):
        self.name, self.make_schedule = name, make_schedule

    @property
    def signature(self) -> tuple:
        return (type(self), self.name, self.make_schedule)

    def hyper_schedules(self, total_steps: int) -> dict[str, Callable[[jax.Array], jax.Array]]:
        return {self.name: self.make_schedule(total_steps)}


class RecorderCB(StepRecorder):
    """Record injected hyperparameters (e.g. 'learning_rate', 'momentum') at every training step, as the step
    used them (after the schedules), from inside the compiled step."""
    order = ParamSchedulerCB.order + 1

    def __init__(self, *names: str):
        self.names = names

    @property
    def signature(self) -> tuple:
        return (type(self), self.names)

    def in_step(self, ctx: StepContext) -> dict:
        return {n: optax.tree_utils.tree_get_all_with_path(ctx.state.opt_state, n)[0][1].reshape(-1)[0]
                for n in self.names}

    @property
    def recs(self) -> dict[str, np.ndarray]:
        out = self.recorded
        return {n: np.zeros(0) for n in self.names} if out is None else dict(out)

    def plot(self, path: str | Path | None = None):
        from jaxlearn.plots import plot_series
        return plot_series(self.recs, xlabel="training step", path=path)


class ActivationStats(StepRecorder):
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
        self.types, self.names, self.bins, self.signed = types, tuple(names), bins, signed

    @property
    def signature(self) -> tuple:
        return (type(self), self.types, self.names, self.bins, self.signed)

    def in_step(self, ctx: StepContext) -> dict:
        return {name: summarize(x, self.bins, signed=self.signed) for name, x in ctx.intermediates.items()}

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        """``{layer: {'mean': (T,), 'std': (T,), 'hist': (T, 40), ...}}`` over the T training batches."""
        return self.recorded or {}

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

    The lr is set inside the step from the step counter (``start_lr * gamma**step``); the debiased exponentially
    smoothed loss (β = 0.98, fast.ai 2018) is read after every batch — this trial fit decides on the host when
    to stop: once the smoothed loss exceeds ``max_mult`` × its minimum (or turns NaN).
    """

    def __init__(self, start_lr: float = 1e-5, gamma: float = 1.3, max_mult: float = 3.0, beta: float = 0.98):
        if start_lr <= 0 or gamma <= 1 or max_mult <= 1 or not 0 <= beta < 1:
            raise ValueError("LRFinderCB needs start_lr > 0, gamma > 1, max_mult > 1 and 0 <= beta < 1")
        self.start_lr, self.gamma, self.max_mult, self.beta = start_lr, gamma, max_mult, beta

    @property
    def signature(self) -> tuple:
        return (type(self), self.start_lr, self.gamma)

    def hyper_schedules(self, total_steps: int) -> dict[str, Callable[[jax.Array], jax.Array]]:
        return {"learning_rate": lambda step: self.start_lr * self.gamma ** step.astype(jnp.float32)}

    def before_fit(self, learn: Learner) -> None:
        self.lrs, self.raw = [], []

    def after_batch(self, learn: Learner) -> None:
        if not learn.training:
            raise CancelEpochException()
        self.lrs.extend(self.start_lr * self.gamma ** (len(self.lrs) + i) for i in range(learn.n_steps))
        self.raw.extend(np.asarray(learn.loss).tolist())  # the finder needs each loss on the host to decide
        smoothed = self.losses
        if np.isnan(smoothed[-1]) or smoothed[-1] > self.max_mult * np.nanmin(smoothed):
            raise CancelFitException()

    @property
    def losses(self) -> np.ndarray:
        """The debiased smoothed loss at each tried lr."""
        return smooth(self.raw, self.beta)

    @property
    def min(self) -> float:
        return float(np.nanmin(self.losses))

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
    finder = LRFinderCB(start_lr, gamma, max_mult)
    with learn.trial(steps_per_call=1):  # one batch per call: the finder reads every loss
        learn.fit(max_epochs, valid=False, callbacks=[*callbacks, finder])
    if plot_path is not None:
        from jaxlearn.plots import plot_lr_find
        plot_lr_find(finder.lrs, finder.losses, finder.suggestion, path=plot_path)
    return finder


class LayerGroupsCB(Callback):
    """Freeze layer groups for a fit: ``learn.fit(1, callbacks=[LayerGroupsCB(freeze_to=-1)])``.

    At ``before_fit`` groups ``< freeze_to`` are frozen and the others trained
    (``freeze_to=0`` unfreezes all; negative counts from the end, ``-1`` = the
    head only, fastai's ``learn.freeze()``). With ``restore=True`` the previous
    flags are put back after the fit; otherwise the freezing stays, as in fastai.
    The optimizer must come from :func:`layer_groups` / :func:`differential`.
    """
    order = -1  # before schedulers and recorders

    def __init__(self, freeze_to: int = -1, restore: bool = False):
        self.freeze_to, self.restore = freeze_to, restore

    def before_fit(self, learn: Learner) -> None:
        self._saved = trainable_flags(learn.state.opt_state)
        learn.replace_state(opt_state=freeze_to(learn.state.opt_state, self.freeze_to))

    def cleanup_fit(self, learn: Learner) -> None:
        flags, self._saved = getattr(self, "_saved", None), None  # None: before_fit never ran
        if self.restore and flags is not None:
            learn.replace_state(opt_state=jax.tree_util.tree_map_with_path(
                lambda path, leaf: flags.get(jax.tree_util.keystr(path), leaf), learn.state.opt_state))
