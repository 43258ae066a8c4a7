"""SGDR snapshot ensembles (Huang et al. 2017; fast.ai 2018 ``cycle_save_name``): a model kept at the end of
every warm-restart cycle, averaged in prediction space."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxlearn.callback import Callback, LearnerLike
from jaxlearn.optim.schedules import sgdr_cycle_ends


def _to_host(tree: Any) -> Any:
    """A host (NumPy) copy of a pytree of device arrays, as plain nested dicts."""
    from flax.serialization import to_state_dict
    return to_state_dict(jax.device_get(tree))


class SGDRSnapshotCB(Callback):
    r"""Snapshot the model at the end of every :func:`sgdr` cycle (fast.ai 2018 ``cycle_save_name``).

    Pair it with ``ParamSchedulerCB('learning_rate', lambda n: sgdr(lr, steps_per_epoch, cycle_len,
    cycle_mult))`` using the same ``cycle_len`` / ``cycle_mult``: cycle ``k`` ends after
    :func:`sgdr_cycle_ends` ``[k]`` training steps of the fit, where the lr has annealed to ~0 and the
    weights sit in a minimum; the next step restarts at the full lr and leaves it. Each snapshot,
    appended to ``snapshots``, is ``{'cycle': k, 'step': steps_into_the_fit, 'params': ...,
    'model_state': ...}`` with host (NumPy) copies of the params and the model state (e.g. BatchNorm's
    running statistics), so later steps on the device cannot touch it. With ``save_dir`` each one is also
    written to ``save_dir/{name}_{k}.msgpack`` (read back with :func:`load_snapshot`). ``n_cycles`` limits the
    snapshots (default: every cycle that ends within the fit).

    Steps are counted on the host from the fit's start (like :class:`~jaxlearn.callbacks.ParamSchedulerCB`,
    which restarts its schedule every fit), so no device value is read per batch. A cycle end always
    falls between two compiled calls, because cycles are whole epochs and a call never spans two
    epochs; ``steps_per_epoch`` overrides the Learner's batches per epoch for schedules built otherwise.
    The snapshots of a fit are averaged in prediction space by :func:`snapshot_ensemble_predict`.
    """

    def __init__(self, cycle_len: int = 1, cycle_mult: int = 2, n_cycles: int | None = None,
                 save_dir: str | Path | None = None, name: str = "cycle", steps_per_epoch: int | None = None):
        if cycle_len < 1 or cycle_mult < 1:
            raise ValueError(f"need cycle_len >= 1 and cycle_mult >= 1, got {cycle_len}, {cycle_mult}")
        self.cycle_len, self.cycle_mult, self.n_cycles = cycle_len, cycle_mult, n_cycles
        self.save_dir = None if save_dir is None else Path(save_dir)
        self.name, self.steps_per_epoch = name, steps_per_epoch
        self.snapshots: list[dict[str, Any]] = []

    def before_fit(self, learn: LearnerLike) -> None:
        """Work out the fit's cycle ends (a resumed fit counts from its first epoch) and start without
        snapshots."""
        steps_per_epoch = self.steps_per_epoch or learn.dls.train.n_batches
        total = learn.n_epochs * steps_per_epoch
        first = steps_per_epoch * self.cycle_len
        # Enough cycles to cover the fit (cycle k ends at first * (mult**(k+1) - 1) / (mult - 1)).
        n = self.n_cycles
        if n is None:
            n = math.ceil(total / first) if self.cycle_mult == 1 else \
                max(1, math.ceil(math.log(total * (self.cycle_mult - 1) / first + 1, self.cycle_mult)))
        self.cycle_ends = [e for e in sgdr_cycle_ends(steps_per_epoch, self.cycle_len, self.cycle_mult, n)
                           if e <= total]
        # A fit resumed from a checkpoint starts at a later epoch: count from there.
        self.step = getattr(getattr(learn, "epochs", None), "start", 0) * steps_per_epoch
        self._next = sum(e <= self.step for e in self.cycle_ends)  # the next cycle to end
        self.snapshots = []

    def after_batch(self, learn: LearnerLike) -> None:
        """Count the training call's steps; snapshot the model when a cycle has ended."""
        if not learn.training:
            return
        self.step += learn.n_steps
        while self._next < len(self.cycle_ends) and self.cycle_ends[self._next] <= self.step:
            end = self.cycle_ends[self._next]
            if end != self.step:
                warnings.warn(f"SGDR cycle {self._next} ended at step {end}, inside a compiled call; "
                              f"snapshot taken at step {self.step}", stacklevel=2)
            self._save(learn)
            self._next += 1

    def _save(self, learn: LearnerLike) -> None:
        snap = {"cycle": self._next, "step": self.step,
                "params": _to_host(learn.state.params), "model_state": _to_host(learn.state.model_state)}
        self.snapshots.append(snap)
        if self.save_dir is not None:
            from flax.serialization import msgpack_serialize
            self.save_dir.mkdir(parents=True, exist_ok=True)
            path = self.save_dir / f"{self.name}_{snap['cycle']}.msgpack"
            path.write_bytes(msgpack_serialize(snap))


def load_snapshot(path: str | Path) -> dict[str, Any]:
    """Read the snapshot file ``path`` written by :class:`SGDRSnapshotCB` (``cycle``, ``step``, ``params``,
    ``model_state``)."""
    from flax.serialization import msgpack_restore
    return msgpack_restore(Path(path).read_bytes())


def snapshot_ensemble_predict(learn: LearnerLike, snapshots, x, batch_size: int = 1024) -> np.ndarray:
    r"""Snapshot ensemble (Huang et al. 2017; fast.ai 2018): the mean softmax of the snapshots' outputs.

    Each snapshot's params and model state are put into ``learn.state`` in turn (same shapes and dtypes,
    so the jitted predict function is not retraced) and ``learn.predict(x, raw=True)`` runs in eval mode; the
    Learner's state is restored afterwards. ``snapshots``: those of :class:`SGDRSnapshotCB` (or
    :func:`load_snapshot`'s); ``x``: raw inputs, predicted in batches of ``batch_size``. Returns
    ``(len(x), n_classes)`` probabilities.
    """
    if not snapshots:
        raise ValueError("no snapshots to ensemble")
    probs = 0.0
    with learn.trial(callbacks=learn.callbacks):  # the Learner's state comes back afterwards
        for snap in snapshots:
            # Onto the devices (and shardings) of the current state: no retrace, works on a mesh.
            ref = learn.state
            params, model_state = jax.tree.map(lambda a, r: jax.device_put(a, r.sharding),
                                               (snap["params"], snap["model_state"]), (ref.params, ref.model_state))
            learn.state = ref.replace(params=params, model_state=model_state)
            probs = probs + np.asarray(jax.nn.softmax(learn.predict(x, batch_size=batch_size, raw=True), axis=-1))
    return probs / len(snapshots)


def snapshot_ensemble_accuracy(learn: LearnerLike, snapshots, ds=None, batch_size: int = 1024) -> dict[str, Any]:
    """Accuracy on ``ds`` (default: the validation set of ``learn``) of each of ``snapshots`` and of their
    ensemble (:func:`snapshot_ensemble_predict`, in batches of ``batch_size``).

    Returns ``{'members': [acc_0, acc_1, ...], 'ensemble': acc, 'last_k': [acc of the last k snapshots'
    ensemble for k = 1..n]}``.
    """
    ds = ds if ds is not None else learn.dls.valid
    y = np.asarray(ds.y)
    member_probs = [snapshot_ensemble_predict(learn, [s], ds.x, batch_size) for s in snapshots]
    accuracy = lambda p: float((p.argmax(-1) == y).mean())  # noqa: E731
    last_k = [accuracy(np.mean(member_probs[-k:], axis=0)) for k in range(1, len(snapshots) + 1)]
    return {"members": [accuracy(p) for p in member_probs], "ensemble": last_k[-1], "last_k": last_k}
