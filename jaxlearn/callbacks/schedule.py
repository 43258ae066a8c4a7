"""Hyperparameters over a fit, set inside the compiled step from the step counter: :class:`ParamSchedulerCB`
(any schedule), :class:`RecorderCB` (what the step used), :class:`LayerGroupsCB` (freezing for a fit), and
fastai's ``fit_one_cycle`` and ``fine_tune`` built from them."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path


import jax
import numpy as np
import optax

from jaxlearn.callback import Callback, LearnerLike, StepRecorder
from jaxlearn.checks import check_positive
from jaxlearn.optim.groups import freeze_to, group_labels, set_lr_mults, trainable_flags
from jaxlearn.optim.hyperparams import hyperparam_names
from jaxlearn.optim.schedules import one_cycle, one_cycle_momentum
from jaxlearn.step import StepContext


class ParamSchedulerCB(Callback):
    """Schedule the injected hyperparameter ``name`` (``'learning_rate'``, ``'momentum'``...) over the fit's
    steps, evaluated inside the compiled step.

    ``make_schedule(total_steps)`` returns ``schedule(step) -> value`` (any optax schedule, or one from
    ``jaxlearn.optim.schedules``), written with ``jnp`` so it traces; ``step`` counts the fit's training steps
    (a fit resumed from a checkpoint continues its schedule). Only the hyperparameter's value changes, on the
    device, from the step counter: no host round trip per batch.
    """

    def __init__(self, name: str, make_schedule: Callable[[int], Callable[[jax.Array], jax.Array]]):
        self.name, self.make_schedule = name, make_schedule

    @property
    def signature(self) -> tuple:
        """The hyperparameter and its schedule maker: equal ones share a compilation."""
        return (type(self), self.name, self.make_schedule)

    def hyper_schedules(self, total_steps: int) -> dict[str, Callable[[jax.Array], jax.Array]]:
        """``{name: make_schedule(total_steps)}``, ``total_steps`` being the fit's training steps."""
        return {self.name: self.make_schedule(total_steps)}


class RecorderCB(StepRecorder):
    """Record the injected hyperparameters ``names`` (e.g. 'learning_rate', 'momentum') at every training step,
    as the step used them (after the schedules), from inside the compiled step; read ``recs`` after the fit."""
    order = ParamSchedulerCB.order + 1

    def __init__(self, *names: str):
        self.names = names

    @property
    def signature(self) -> tuple:
        """The recorded names: equal ones share a compilation."""
        return (type(self), self.names)

    def in_step(self, ctx: StepContext) -> dict:
        """Each named hyperparameter's value in the optimizer state of this step (the first group's)."""
        return {n: optax.tree_utils.tree_get_all_with_path(ctx.state.opt_state, n)[0][1].reshape(-1)[0]
                for n in self.names}

    @property
    def recs(self) -> dict[str, np.ndarray]:
        """``{name: (T,) values}`` over the fit's T training steps."""
        out = self.recorded
        return {n: np.zeros(0) for n in self.names} if out is None else dict(out)

    def plot(self, path: str | Path | None = None):
        """Each recorded hyperparameter per training step; the figure, also saved to ``path`` when given."""
        from jaxlearn.callbacks.plots import plot_series
        return plot_series(self.recs, xlabel="training step", path=path)


MOMENTUM_NAMES = ("momentum", "b1", "beta")  # optax.sgd's, adam / adamw's, jaxlearn.optim.momentum's


class _ByValue(functools.partial):
    """A partial equal to another with the same function and arguments: the schedules of two
    ``fit_one_cycle`` calls with equal settings share one compilation (callbacks' signatures compare them)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, functools.partial) and \
            (self.func, self.args, self.keywords) == (other.func, other.args, other.keywords)

    def __hash__(self) -> int:
        return hash((self.func, self.args, tuple(sorted(self.keywords.items()))))


def fit_one_cycle(learn: LearnerLike, n_epochs: int, lr_max: float | None = None, div: float = 25.0,
                  div_final: float = 1e5, pct_start: float = 0.25,
                  moms: Sequence[float] | None = (0.95, 0.85, 0.95), callbacks: Sequence[Callback] = (),
                  **fit_kwargs) -> None:
    """fastai's ``fit_one_cycle`` (the Learner's method calls this): ``learn.fit(n_epochs)`` with the lr on
    :func:`~jaxlearn.optim.schedules.one_cycle` (``lr_max / div`` up to ``lr_max`` over the first ``pct_start``
    of the steps, then down to ``lr_max / div_final``) and the momentum on
    :func:`~jaxlearn.optim.schedules.one_cycle_momentum` (``moms``) — two :class:`ParamSchedulerCB`, nothing else.

    ``lr_max`` defaults to the current learning rate. The momentum is whichever of :data:`MOMENTUM_NAMES` the
    optimizer has as an injected hyperparameter (none, or ``moms=None``: the lr alone is scheduled, as for plain
    SGD). ``callbacks`` join this fit; ``fit_kwargs`` go to ``learn.fit``.
    """
    lr_max = learn.get_hyper("learning_rate") if lr_max is None else lr_max
    check_positive("lr_max", lr_max)
    scheds = [ParamSchedulerCB("learning_rate", _ByValue(one_cycle, lr_max, pct_start=pct_start, div=div,
                                                         div_final=div_final))]
    names = hyperparam_names(learn.state.opt_state)
    mom = next((n for n in MOMENTUM_NAMES if n in names), None)
    if mom is not None and moms is not None:
        scheds.append(ParamSchedulerCB(mom, _ByValue(one_cycle_momentum, pct_start=pct_start, moms=tuple(moms))))
    learn.fit(n_epochs, callbacks=[*scheds, *callbacks], **fit_kwargs)


def fine_tune(learn: LearnerLike, epochs: int, base_lr: float = 2e-3, freeze_epochs: int = 1,
              lr_mult: float = 100.0, pct_start: float = 0.3, div: float = 5.0, **kwargs) -> None:
    """fastai's ``fine_tune`` (the Learner's method calls this): train the head of ``learn`` alone for
    ``freeze_epochs`` (``fit_one_cycle`` at ``base_lr``, ``pct_start=0.99``), then every layer group for
    ``epochs`` with differential lrs from ``base_lr / 2 / lr_mult`` (first group) to ``base_lr / 2`` (the head),
    spaced geometrically as fastai's ``slice(lo, hi)`` (``fit_one_cycle`` with ``pct_start`` and ``div``).
    ``kwargs`` go to both ``fit_one_cycle`` calls. The optimizer must have layer groups
    (:func:`jaxlearn.optim.layer_groups`), which freezing needs."""
    n_groups = len(group_labels(learn.state.opt_state))
    if n_groups < 2:
        raise ValueError("fine_tune freezes the body and trains the head first, so the optimizer needs at least two "
                         "layer groups: Learner(model, dls, optimizer=jaxlearn.optim.layer_groups(jaxlearn.optim.adam, "
                         "(2e-3,) * 3)) makes three contiguous groups of the model's top-level layers")
    check_positive("base_lr", base_lr)
    check_positive("lr_mult", lr_mult)
    if freeze_epochs:
        learn.replace_state(opt_state=set_lr_mults(freeze_to(learn.state.opt_state, -1), [1.0] * n_groups))
        fit_one_cycle(learn, freeze_epochs, base_lr, pct_start=0.99, **kwargs)
    mults = [lr_mult ** (-(n_groups - 1 - i) / (n_groups - 1)) for i in range(n_groups)]  # fastai's even_mults
    learn.replace_state(opt_state=set_lr_mults(freeze_to(learn.state.opt_state, 0), mults))
    fit_one_cycle(learn, epochs, base_lr / 2, pct_start=pct_start, div=div, **kwargs)


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

    def before_fit(self, learn: LearnerLike) -> None:
        """Freeze the groups before ``freeze_to`` and unfreeze the others (remembering the previous flags)."""
        self._saved = trainable_flags(learn.state.opt_state)
        learn.replace_state(opt_state=freeze_to(learn.state.opt_state, self.freeze_to))

    def cleanup_fit(self, learn: LearnerLike) -> None:
        """With ``restore``: put the previous flags back, however the fit ends."""
        flags, self._saved = getattr(self, "_saved", None), None  # None: before_fit never ran
        if self.restore and flags is not None:
            learn.replace_state(opt_state=jax.tree_util.tree_map_with_path(
                lambda path, leaf: flags.get(jax.tree_util.keystr(path), leaf), learn.state.opt_state))

