"""The callback protocol: what a callback may do, when each event fires, and what it reads on ``learn``.

Callbacks (miniai's, fastai's) are objects with any of the event methods below; the Learner calls them in
``order`` (lower first). Every callback in :mod:`jaxlearn.callbacks` and the lesson domains is written against
this module, never against the Learner class: the Learner sits above them and imports what its shortcuts
(``fit_one_cycle``, ``lr_find``) need.

Events, for ``learn.fit(n_epochs)``::

    resume_fit                          once, before anything (a checkpoint may restore the state here)
    before_fit
      for each epoch:
        before_epoch                    training pass (learn.training True)
          before_batch / after_batch    once per compiled CALL: learn.n_steps batches (steps_per_call; one
                                        on the CPU by default, a whole epoch on an accelerator)
        after_epoch
        before_epoch                    validation pass (learn.training False)
          before_batch / after_batch    once: the whole validation set is one compiled call
        after_epoch
    after_fit
    cleanup_fit                         always, however the fit ends

Each ``before_X`` / ``after_X`` pair is followed by ``cleanup_X``; raising ``CancelXException`` skips to
``after_cancel_X`` then ``cleanup_X``. What a callback reads on ``learn`` during those events:

* ``learn.state``: the :class:`~jaxlearn.step.TrainState` (params, model state, optimizer state, step, key); the
  next training call reuses its buffers (keep a :func:`~jaxlearn.trees.copy_state`);
* ``learn.epoch``: the epoch index in this fit; ``learn.epochs`` the range being run;
* ``learn.training``: True in the training pass, False in the validation pass;
* ``learn.dl``: the :class:`~jaxlearn.data.ArrayDataset` of the pass;
* ``learn.iter``: the first batch of the current call (0-based, within the epoch);
* ``learn.n_steps``: how many batches the current call runs (training);
* ``learn.indices``: ``(idx, weight)``, the epoch's example indices and weights, one row per batch
  (``(n_batches, batch_size)`` each), on the device;
* ``learn.losses``: after a training call, the ``(n_steps,)`` losses of its batches, on the device;
* ``learn.step_outputs[cb]``: after a training call, what ``cb.in_step`` returned, stacked over its steps;
* ``learn.epoch_metrics``: after an epoch's pass, ``{'loss': ..., 'accuracy': ...}`` as host floats.

Reading a device value (``float(learn.losses[0])``) waits for the device: keep values as arrays and read them
once per epoch or fit, as :class:`StepRecorder` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np

LearnerLike = Any  # the Learner as a callback sees it: the attributes listed above (this module cannot import it)


class CancelFitException(Exception):
    """Raised by a callback to stop the fit; ``after_cancel_fit`` and ``cleanup_fit`` still run."""


class CancelEpochException(Exception):
    """Raised by a callback to skip the rest of the current epoch (training or validation pass)."""


class CancelBatchException(Exception):
    """Raised by a callback (``before_batch``) to skip the current compiled call's batches."""


class Callback:
    """Base class: override any of ``before_/after_/after_cancel_/cleanup_`` + ``fit/epoch/batch``.

    What a callback puts into the compiled step (the Learner compiles once for all of them):

    * ``capture`` — a module filter ``(module, method_name) -> bool``: those modules' outputs go to flax's
      ``intermediates`` collection, seen by ``in_step`` as ``ctx.intermediates``;
    * ``in_step(ctx) -> small arrays`` — reduces what it needs from a :class:`~jaxlearn.step.StepContext`
      (means, histograms, norms) inside the step; stacked over the call's steps in
      ``learn.step_outputs[self]``; ``perturb = True`` also fills ``ctx.out_grads``;
    * ``batch_transform(x, training, key) -> x`` — normalization, augmentation;
    * ``hyper_schedules(total_steps) -> {name: schedule(step)}`` — injected hyperparameters set from the step.

    ``signature`` says what such a callback puts into the trace: equal signatures share one compilation.
    """
    order: int = 0
    capture: Callable[[nn.Module, str], bool] | None = None
    perturb: bool = False  # in_step needs ctx.out_grads (gradients of the loss w.r.t. perturbed outputs)

    @property
    def signature(self) -> tuple:
        """What this callback puts into the compiled step, as a hashable key: callbacks with equal signatures
        share one compilation. Default ``(type(self), id(self))``: a callback the Learner cannot compare is
        compiled per instance; subclasses return their settings (bins, names, schedules)."""
        return (type(self), id(self))  # unknown callbacks: compiled per instance


class StepRecorder(Callback):
    """Keeps ``record(learn)`` of every training call — device arrays, so nothing waits on the device — and
    concatenates them on the host only when read (``recorded``). Default: this callback's in-step outputs."""

    def before_fit(self, learn: LearnerLike) -> None:
        """Forget the records of an earlier fit."""
        self._chunks: list = []

    def after_batch(self, learn: LearnerLike) -> None:
        """Keep ``record(learn)`` of a training call (still on the device)."""
        if learn.training:
            self._chunks.append(self.record(learn))

    def record(self, learn: LearnerLike) -> Any:
        """What to keep of one training call, read from ``learn`` (the Learner); override to keep something
        else. Default: ``learn.step_outputs[self]``, this callback's ``in_step`` results stacked over the call's
        steps."""
        return learn.step_outputs[self]

    @property
    def recorded(self) -> Any:
        """The records of every training step of the fit, concatenated (``None`` before any)."""
        chunks = getattr(self, "_chunks", None)
        if not chunks:
            return None
        return jax.tree.map(lambda *xs: np.concatenate(xs), *jax.device_get(chunks))
