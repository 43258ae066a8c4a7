"""Leslie Smith's learning-rate range test (fast.ai): :class:`LRFinderCB` inside a trial fit, the plain
:func:`lr_find` (fast.ai 2018) and fastai 2's suggestions (:func:`suggest_lrs`, ``learn.lr_find()``)."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn.callback import CancelEpochException, CancelFitException, Callback, LearnerLike
from jaxlearn.callbacks.monitor import smooth


class LRFinderCB(Callback):
    """Leslie Smith's range test (fast.ai): lr grows by ``gamma`` per batch from ``start_lr``.

    The lr is set inside the step from the step counter (``start_lr * gamma**step``); the debiased exponentially
    smoothed loss (``beta`` = 0.98, fast.ai 2018) is read after every batch — this trial fit decides on the host
    when to stop: once the smoothed loss exceeds ``max_mult`` × its minimum (or turns NaN), or after ``num_it``
    batches when given (fastai's ``end_lr``). Run it with :func:`lr_find`, which puts the Learner back.
    """

    def __init__(self, start_lr: float = 1e-5, gamma: float = 1.3, max_mult: float = 3.0, beta: float = 0.98,
                 num_it: int | None = None):
        if start_lr <= 0 or gamma <= 1 or max_mult <= 1 or not 0 <= beta < 1:
            raise ValueError("LRFinderCB needs start_lr > 0, gamma > 1, max_mult > 1 and 0 <= beta < 1")
        self.start_lr, self.gamma, self.max_mult, self.beta = start_lr, gamma, max_mult, beta
        self.num_it = num_it  # stop after this many batches (fastai's end_lr), if the loss has not blown up

    @property
    def signature(self) -> tuple:
        """The schedule's numbers (``start_lr``, ``gamma``): equal ones share a compilation."""
        return (type(self), self.start_lr, self.gamma)

    def hyper_schedules(self, total_steps: int) -> dict[str, Callable[[jax.Array], jax.Array]]:
        """The lr ``start_lr * gamma**step``, set inside the step (``total_steps`` is not needed)."""
        return {"learning_rate": lambda step: self.start_lr * self.gamma ** step.astype(jnp.float32)}

    def before_fit(self, learn: LearnerLike) -> None:
        """Start with no lrs and losses."""
        self.lrs, self.raw = [], []

    def after_batch(self, learn: LearnerLike) -> None:
        """Record the call's lrs and losses; stop the fit once the smoothed loss blows up (or after ``num_it``);
        skip validation."""
        if not learn.training:
            raise CancelEpochException()
        self.lrs.extend(self.start_lr * self.gamma ** (len(self.lrs) + i) for i in range(learn.n_steps))
        self.raw.extend(np.asarray(learn.losses).tolist())  # the finder needs each loss on the host to decide
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
        """The lowest smoothed loss."""
        return float(np.nanmin(self.losses))

    @property
    def suggestion(self) -> float:
        """fast.ai 2018's rule of thumb: a tenth of the lr at the smoothed loss's minimum."""
        return self.lrs[int(np.nanargmin(self.losses))] / 10


def lr_find(learn: LearnerLike, start_lr: float = 1e-5, gamma: float = 1.3, max_mult: float = 3.0,
            max_epochs: int = 10, plot_path: str | Path | None = None,
            callbacks: Sequence[Callback] = (), num_it: int | None = None) -> LRFinderCB:
    """Run the range test on ``learn`` and put everything back: params, norm stats, optimizer, lr, epochs.

    The lr grows by ``gamma`` per batch from ``start_lr`` until the smoothed loss passes ``max_mult`` × its
    minimum, for at most ``max_epochs`` epochs and ``num_it`` batches (:class:`LRFinderCB`). Of the Learner's
    own callbacks only the input transforms take part; ``callbacks`` join the search. ``plot_path``: save the
    curve there. Returns the finder with ``lrs``, ``losses`` (smoothed) and ``suggestion``.
    """
    finder = LRFinderCB(start_lr, gamma, max_mult, num_it=num_it)
    with learn.trial(steps_per_call=1):  # one batch per call: the finder reads every loss
        learn.fit(max_epochs, valid=False, callbacks=[*callbacks, finder])
    if plot_path is not None:
        from jaxlearn.callbacks.plots import plot_lr_find
        plot_lr_find(finder.lrs, finder.losses, finder.suggestion, path=plot_path)
    return finder


def valley(lrs: np.ndarray, losses: np.ndarray) -> float:
    """fastai's ``valley`` suggestion from the tried ``lrs`` and their smoothed ``losses``: the longest run of
    ever-lower losses (the longest decreasing subsequence, O(n²) as in fastai), and the lr about two thirds of
    the way along it — where the loss still falls steeply, well before the minimum."""
    lds, end = [1] * len(losses), 0
    for i in range(1, len(losses)):
        lds[i] = max([lds[j] + 1 for j in range(i) if losses[i] < losses[j]], default=1)
        end = i if lds[i] > lds[end] else end
    start = end - lds[end]
    third = (end - start) / 3
    return float(lrs[max(start + int(third) + int(third / 2), 0)])


def minimum(lrs: np.ndarray, losses: np.ndarray) -> float:
    """fastai's ``minimum`` suggestion: a tenth of the lr (of ``lrs``) at the lowest smoothed loss (of
    ``losses``)."""
    return float(lrs[int(np.argmin(losses))]) / 10


SUGGESTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {"valley": valley, "minimum": minimum}


def suggestion_range(lrs: Sequence[float], losses: Sequence[float], num_it: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of the curve (``lrs``, smoothed ``losses``) fastai suggests from: without the first tenth of
    ``num_it`` (the warm-up of the smoothing), the last 5 points (the blow-up) and anything from the first NaN
    on — when enough is left."""
    lrs, losses = np.asarray(lrs, np.float64), np.asarray(losses, np.float64)
    nans = np.flatnonzero(np.isnan(losses))
    end = nans[0] if len(nans) else len(losses)
    lo, hi = num_it // 10, end - 5
    return (lrs[lo:hi], losses[lo:hi]) if hi - lo >= 2 else (lrs[:end], losses[:end])


def suggest_lrs(learn: LearnerLike, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100,
                suggest: Sequence[str] = ("valley", "minimum"), plot: bool | str | Path = True) -> tuple:
    """fastai's ``learn.lr_find()`` (the Learner's method calls this): ``num_it`` batches with the lr growing
    exponentially from ``start_lr`` to ``end_lr``, stopped early when the smoothed loss passes 4× its minimum;
    the Learner is put back exactly.

    Returns a ``SuggestedLRs`` namedtuple with one field per name in ``suggest`` (:data:`SUGGESTIONS`:
    ``valley``, ``minimum``). ``plot`` draws the curve with the suggestions marked (a path: saved there).
    """
    if not 0 < start_lr < end_lr or num_it < 2:
        raise ValueError(f"lr_find needs 0 < start_lr < end_lr and num_it >= 2, got {start_lr}, {end_lr}, {num_it}")
    if unknown := [s for s in suggest if s not in SUGGESTIONS]:
        raise ValueError(f"unknown suggestion {unknown}: known are {list(SUGGESTIONS)}")
    finder = lr_find(learn, start_lr, gamma=(end_lr / start_lr) ** (1 / num_it), max_mult=4.0,
                     max_epochs=-(-num_it // learn.dls.train.n_batches), num_it=num_it)
    lrs, losses = suggestion_range(finder.lrs, finder.losses, num_it)
    found = namedtuple("SuggestedLRs", suggest)(*(SUGGESTIONS[s](lrs, losses) for s in suggest))
    if plot:
        from jaxlearn.callbacks.plots import plot_lr_find
        plot_lr_find(finder.lrs, finder.losses, found._asdict(), path=None if plot is True else plot)
    return found

