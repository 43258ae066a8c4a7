"""The Learner's everyday callbacks (miniai's, one idea per class).

Per-batch numbers stay on the device as arrays until a callback needs them on the host (at the end of an
epoch or of the fit), so callbacks never stall the asynchronous dispatch of compiled steps.
"""

from __future__ import annotations

import functools
import time
from collections import namedtuple
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import flax.linen as nn

from jaxlearn.learner import CancelEpochException, CancelFitException, Callback, Learner, StepRecorder, patch
from jaxlearn.monitor import smooth
from jaxlearn.optim import check_positive, freeze_to, hyperparam_names, trainable_flags
from jaxlearn.schedules import one_cycle, one_cycle_momentum
from jaxlearn.stats import N_BINS, module_filter, summarize
from jaxlearn.step import StepContext

__all__ = ["Callback", "MetricsCB", "ProgressCB", "SingleBatchCB", "BatchTransformCB", "ParamSchedulerCB",
           "RecorderCB", "ActivationStats", "LRFinderCB", "lr_find", "valley", "minimum", "LayerGroupsCB"]


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

    def color_dim(self, path=None, title: str | None = None):
        from jaxlearn.plots import color_dim
        return color_dim(self.stats, path=path, title=title)

    def dead_chart(self, path=None, title: str | None = None):
        from jaxlearn.plots import dead_chart
        return dead_chart(self.stats, path=path, title=title)


class LRFinderCB(Callback):
    """Leslie Smith's range test (fast.ai): lr grows by ``gamma`` per batch from ``start_lr``.

    The lr is set inside the step from the step counter (``start_lr * gamma**step``); the debiased exponentially
    smoothed loss (β = 0.98, fast.ai 2018) is read after every batch — this trial fit decides on the host when
    to stop: once the smoothed loss exceeds ``max_mult`` × its minimum (or turns NaN).
    """

    def __init__(self, start_lr: float = 1e-5, gamma: float = 1.3, max_mult: float = 3.0, beta: float = 0.98,
                 num_it: int | None = None):
        if start_lr <= 0 or gamma <= 1 or max_mult <= 1 or not 0 <= beta < 1:
            raise ValueError("LRFinderCB needs start_lr > 0, gamma > 1, max_mult > 1 and 0 <= beta < 1")
        self.start_lr, self.gamma, self.max_mult, self.beta = start_lr, gamma, max_mult, beta
        self.num_it = num_it  # stop after this many batches (fastai's end_lr), if the loss has not blown up

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
        if np.isnan(smoothed[-1]) or smoothed[-1] > self.max_mult * np.nanmin(smoothed) \
                or (self.num_it is not None and len(self.lrs) >= self.num_it):
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
            callbacks: Sequence[Callback] = (), num_it: int | None = None) -> LRFinderCB:
    """Run the range test on ``learn`` and put everything back: params, norm stats, optimizer, lr, epochs.

    Of the Learner's own callbacks only the input transforms take part; ``callbacks`` join the search; at most
    ``num_it`` batches. Returns the finder with ``lrs``, ``losses`` (smoothed) and ``suggestion``.
    """
    finder = LRFinderCB(start_lr, gamma, max_mult, num_it=num_it)
    with learn.trial(steps_per_call=1):  # one batch per call: the finder reads every loss
        learn.fit(max_epochs, valid=False, callbacks=[*callbacks, finder])
    if plot_path is not None:
        from jaxlearn.plots import plot_lr_find
        plot_lr_find(finder.lrs, finder.losses, finder.suggestion, path=plot_path)
    return finder


def valley(lrs: np.ndarray, losses: np.ndarray) -> float:
    """fastai's ``valley`` suggestion: the longest run of ever-lower losses (the longest decreasing
    subsequence, O(n²) as in fastai), and the lr about two thirds of the way along it — where the loss still
    falls steeply, well before the minimum."""
    lds, end = [1] * len(losses), 0
    for i in range(1, len(losses)):
        lds[i] = max([lds[j] + 1 for j in range(i) if losses[i] < losses[j]], default=1)
        end = i if lds[i] > lds[end] else end
    start = end - lds[end]
    third = (end - start) / 3
    return float(lrs[max(start + int(third) + int(third / 2), 0)])


def minimum(lrs: np.ndarray, losses: np.ndarray) -> float:
    """fastai's ``minimum`` suggestion: a tenth of the lr at the lowest smoothed loss."""
    return float(lrs[int(np.argmin(losses))]) / 10


SUGGESTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {"valley": valley, "minimum": minimum}


def suggestion_range(lrs: Sequence[float], losses: Sequence[float], num_it: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of the curve fastai suggests from: without the first tenth of ``num_it`` (the warm-up of the
    smoothing), the last 5 points (the blow-up) and anything from the first NaN on — when enough is left."""
    lrs, losses = np.asarray(lrs, np.float64), np.asarray(losses, np.float64)
    nans = np.flatnonzero(np.isnan(losses))
    end = nans[0] if len(nans) else len(losses)
    lo, hi = num_it // 10, end - 5
    return (lrs[lo:hi], losses[lo:hi]) if hi - lo >= 2 else (lrs[:end], losses[:end])


@patch(name="lr_find")
def learner_lr_find(self: Learner, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100,
                    suggest: Sequence[str] = ("valley", "minimum"), plot: bool | str | Path = True):
    """fastai's ``learn.lr_find()``: ``num_it`` batches with the lr growing exponentially from ``start_lr`` to
    ``end_lr``, stopped early when the smoothed loss passes 4× its minimum; the Learner is put back exactly.

    Returns a ``SuggestedLRs`` namedtuple with one field per name in ``suggest`` (:data:`SUGGESTIONS`:
    ``valley``, ``minimum``). ``plot`` draws the curve with the suggestions marked (a path: saved there).
    """
    if not 0 < start_lr < end_lr or num_it < 2:
        raise ValueError(f"lr_find needs 0 < start_lr < end_lr and num_it >= 2, got {start_lr}, {end_lr}, {num_it}")
    if unknown := [s for s in suggest if s not in SUGGESTIONS]:
        raise ValueError(f"unknown suggestion {unknown}: known are {list(SUGGESTIONS)}")
    finder = lr_find(self, start_lr, gamma=(end_lr / start_lr) ** (1 / num_it), max_mult=4.0,
                     max_epochs=-(-num_it // self.dls.train.n_batches), num_it=num_it)
    lrs, losses = suggestion_range(finder.lrs, finder.losses, num_it)
    found = namedtuple("SuggestedLRs", suggest)(*(SUGGESTIONS[s](lrs, losses) for s in suggest))
    if plot:
        from jaxlearn.plots import plot_lr_find
        plot_lr_find(finder.lrs, finder.losses, found._asdict(), path=None if plot is True else plot)
    return found


MOMENTUM_NAMES = ("momentum", "b1", "beta")  # optax.sgd's, adam / adamw's, jaxlearn.optim.momentum's


class _ByValue(functools.partial):
    """A partial equal to another with the same function and arguments: the schedules of two
    ``fit_one_cycle`` calls with equal settings share one compilation (callbacks' signatures compare them)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, functools.partial) and \
            (self.func, self.args, self.keywords) == (other.func, other.args, other.keywords)

    def __hash__(self) -> int:
        return hash((self.func, self.args, tuple(sorted(self.keywords.items()))))


@patch
def fit_one_cycle(self: Learner, n_epochs: int, lr_max: float | None = None, div: float = 25.0,
                  div_final: float = 1e5, pct_start: float = 0.25,
                  moms: Sequence[float] | None = (0.95, 0.85, 0.95), callbacks: Sequence[Callback] = (),
                  **fit_kwargs) -> None:
    """fastai's ``fit_one_cycle``: ``fit`` with the lr on :func:`schedules.one_cycle` (``lr_max / div`` up to
    ``lr_max`` over the first ``pct_start`` of the steps, then down to ``lr_max / div_final``) and the momentum
    on :func:`schedules.one_cycle_momentum` (``moms``) — two :class:`ParamSchedulerCB`, nothing else.

    ``lr_max`` defaults to the current learning rate. The momentum is whichever of :data:`MOMENTUM_NAMES` the
    optimizer has as an injected hyperparameter (none: the lr alone is scheduled, as for plain SGD).
    """
    lr_max = self.get_hyper("learning_rate") if lr_max is None else lr_max
    check_positive("lr_max", lr_max)
    scheds = [ParamSchedulerCB("learning_rate", _ByValue(one_cycle, lr_max, pct_start=pct_start, div=div,
                                                         div_final=div_final))]
    names = hyperparam_names(self.state.opt_state)
    mom = next((n for n in MOMENTUM_NAMES if n in names), None)
    if mom is not None and moms is not None:
        scheds.append(ParamSchedulerCB(mom, _ByValue(one_cycle_momentum, pct_start=pct_start, moms=tuple(moms))))
    self.fit(n_epochs, callbacks=[*scheds, *callbacks], **fit_kwargs)


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
