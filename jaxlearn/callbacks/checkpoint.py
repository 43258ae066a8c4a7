"""Checkpoints with orbax: save the whole run, resume it bit for bit.

A checkpoint holds the complete :class:`~jaxlearn.learner.TrainState` — params, norm statistics (the model's
other collections), optimizer state (including injected hyperparameters such as the learning rate), the
step and the PRNG key — and the Learner's position (``epochs_done``, the epoch reached in the current fit,
its seed). Each is an orbax step directory named by ``epochs_done``::

    learn.fit(5, callbacks=[CheckpointCB("ckpt", every_n_epochs=1, keep=3)])
    # interrupted (Ctrl-C, a crash, a preempted machine) ... then, in a new process:
    learn = Learner(...same model, data, optimizer, seed...)
    learn.fit(5, callbacks=[CheckpointCB("ckpt", keep=3, resume=True)])   # epochs already done are skipped

Safety: orbax writes each checkpoint into a temporary directory and renames it when complete, so a write
that dies midway never replaces or corrupts an earlier checkpoint (the unfinished one is ignored). A Ctrl-C
arriving while a checkpoint is being written is held back until the write is done, and
:class:`CheckpointCB` always saves the last finished epoch when the fit ends, however it ends.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import warnings
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from jaxlearn.callback import Callback, LearnerLike
from jaxlearn.callbacks.checkpoint_files import (FORMAT, TMP_MARK, VERSION, CheckpointError, Unreadable, host_arrays,
                                                 load, load_latest_readable, open_manager, sealed, state_dict)
from jaxlearn.callbacks.core import MetricsCB
from jaxlearn.trees import copy_state

__all__ = ["CheckpointCB", "CheckpointError", "save_checkpoint", "restore_checkpoint", "latest_step",
           "checkpoint_steps"]


# ------------------------------------------------------------------------------------------- helpers


def _position(learn: LearnerLike, fit_epoch: int | None = None) -> dict:
    return {"format": FORMAT, "version": VERSION, "epochs_done": int(learn.epochs_done),
            "fit_epoch": int(learn.fit_epochs_done if fit_epoch is None else fit_epoch),
            "n_epochs": int(getattr(learn, "n_epochs", 0)), "step": int(np.asarray(jax.device_get(learn.state.step))),
            "seed": int(learn.seed), "n_devices": int(learn.n_devices),
            "metrics": {k: float(v) for k, v in getattr(learn, "epoch_metrics", {}).items()},
            "history": _metrics_history(learn)}


def _metrics_history(learn: LearnerLike) -> list[dict]:
    """The epoch rows of the Learner's MetricsCB (restored on resume, so the history is whole); a non-finite
    number is stored as null, keeping the record strict JSON."""
    cb = next((cb for cb in learn.callbacks if isinstance(cb, MetricsCB)), None)
    return [{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
            for row in getattr(cb, "history", [])]


@contextlib.contextmanager
def _sigint_deferred():
    """Hold a Ctrl-C back until the block is done (a checkpoint write is not cut in half)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    except (ValueError, OSError):  # no signals here (embedded interpreter)
        yield
        return
    try:
        yield
    except BaseException:
        signal.signal(signal.SIGINT, previous)
        raise
    signal.signal(signal.SIGINT, previous)
    if received and callable(previous):
        previous(signal.SIGINT, None)  # the default handler raises KeyboardInterrupt now
    elif received and previous == signal.SIG_DFL:
        raise KeyboardInterrupt


def _save(manager: ocp.CheckpointManager, state, position: dict) -> bool:
    step = position["epochs_done"]
    if step in manager.all_steps():
        return False
    sd = state_dict(state)
    # hashed from the host copy of the very arrays orbax writes, so any later change to the files is caught
    record = sealed(position, host_arrays(sd))
    with _sigint_deferred():
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(sd),
                                                   learner=ocp.args.JsonSave(record)), force=True)
    return True


def checkpoint_steps(directory: str | os.PathLike) -> list[int]:
    """The finished checkpoints in ``directory`` (their ``epochs_done``), oldest first; [] if none."""
    if not Path(directory).is_dir():
        return []
    manager = open_manager(directory, read_only=True)
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def latest_step(directory: str | os.PathLike) -> int | None:
    """The latest finished checkpoint in ``directory``, or None (e.g. to decide whether to resume)."""
    steps = checkpoint_steps(directory)
    return steps[-1] if steps else None


# ---------------------------------------------------------------------------------------- save / restore

def save_checkpoint(learn: LearnerLike, directory: str | os.PathLike, keep: int | None = None) -> Path | None:
    """Save ``learn``'s state and position now (synchronously) as step ``learn.epochs_done``.

    Returns the checkpoint's path, or None when a checkpoint of this ``epochs_done`` already exists.
    """
    manager = open_manager(directory, keep=keep, async_save=False)
    try:
        saved = _save(manager, learn.state, _position(learn))
        manager.wait_until_finished()
    finally:
        manager.close()
    return Path(directory).absolute() / str(learn.epochs_done) if saved else None


def restore_checkpoint(learn: LearnerLike, directory: str | os.PathLike, step: int | None = None) -> dict:
    """Load a checkpoint into ``learn``: its state, ``epochs_done`` and seed.

    ``step=None`` loads the latest checkpoint that reads back intact: a damaged latest one (unreadable
    files, an array or the position record not matching the checksums saved with it) is passed over with
    a warning naming it and why. An explicit ``step`` loads that one or raises.

    Returns the saved position (``epochs_done``, ``fit_epoch``, ``step``, ``seed``, last ``metrics``, ...).
    Raises :class:`CheckpointError` with what is wrong: no such directory, no finished checkpoint in it,
    a checkpoint of another model, or damaged files (naming the other checkpoints to fall back on).
    """
    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint directory {directory}: nothing to resume from")
    manager = open_manager(directory, read_only=True)
    try:
        steps = sorted(manager.all_steps())
        if not steps:
            unfinished = sorted(p.name for p in directory.iterdir() if TMP_MARK in p.name)
            raise CheckpointError(f"no finished checkpoint in {directory}" + (
                f": only unfinished writes ({', '.join(unfinished)}) from an interrupted save" if unfinished else ""))
        if step is None:
            position, sd = load_latest_readable(manager, directory, steps, learn.state)
        elif step not in steps:
            raise CheckpointError(f"no checkpoint {step} in {directory}; finished checkpoints: {steps}")
        else:
            try:
                position, sd = load(manager, directory, step, learn.state)
            except Unreadable as e:
                others = [s for s in steps if s != step]
                raise Unreadable(f"{e}; other checkpoints there: {others} (restore one with step=...)" if others
                                  else str(e)) from e.__cause__
    finally:
        manager.close()
    if learn.mesh is None:  # uncommitted, like a fresh Learner's state: the compiled calls are reused as is
        sd = jax.tree.map(lambda a: jax.numpy.asarray(np.asarray(a)), sd)
    sd["rng"] = jax.random.wrap_key_data(sd["rng"], impl=jax.random.key_impl(learn.state.rng))
    learn.state = serialization.from_state_dict(learn.state, sd)
    learn.epochs_done = int(position["epochs_done"])
    learn.fit_epochs_done = int(position.get("fit_epoch", 0))
    if int(position.get("seed", learn.seed)) != learn.seed:
        warnings.warn(f"the checkpoint was trained with seed {position['seed']}, this Learner has seed "
                      f"{learn.seed}: continuing with the checkpoint's seed so the data order follows the run",
                      stacklevel=2)
        learn.seed = int(position["seed"])
    return position


# ------------------------------------------------------------------------------------------ callback

class CheckpointCB(Callback):
    """Save a checkpoint every ``every_n_epochs`` finished epochs, keeping the latest ``keep`` (None: all).

    An epoch is finished after its validation pass (or its training pass in a ``valid=False`` fit); its
    checkpoint is named by ``learn.epochs_done``. When the fit ends — normally, cancelled, by an error or a
    Ctrl-C — the last finished epoch is saved if it was not yet, and pending writes are waited for. Saves
    are asynchronous (``async_save``): the arrays are copied to the host, then written while training goes on.

    A directory holding checkpoints beyond the Learner's ``epochs_done`` belongs to another run: the fit
    stops with an error unless it resumes from it (``CheckpointCB(directory, resume=True)``) or ``overwrite=True``
    (which deletes those later checkpoints). The LR finder's trial fits are never saved.
    """
    order = 90  # after the metrics callbacks, so a saved position carries the epoch's metrics

    def __init__(self, directory: str | os.PathLike, every_n_epochs: int = 1, keep: int | None = None,
                 async_save: bool = True, overwrite: bool = False, resume: bool = False):
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be a positive integer, got {every_n_epochs!r}")
        if keep is not None and (not isinstance(keep, int) or keep < 1):
            raise ValueError(f"keep must be a positive integer or None (keep all), got {keep!r}")
        self.directory = Path(directory).absolute()
        self.every_n_epochs, self.keep, self.async_save, self.overwrite = every_n_epochs, keep, async_save, overwrite
        self.resume = resume
        self.manager, self._pending = None, None  # cleanup_fit is safe even if before_fit never ran
        self.saved: list[int] = []  # steps this callback wrote

    def resume_fit(self, learn: LearnerLike) -> None:
        """With ``resume=True`` and a finished checkpoint in the directory: restore it and skip the epochs of
        this fit that it had finished, so the fit continues exactly where it stopped."""
        learn.resumed_from, learn.resumed_history = None, None
        if self.resume and latest_step(self.directory) is not None:
            position = restore_checkpoint(learn, self.directory)
            learn.resumed_history = position.get("history")
            learn.fit_epochs_done = min(int(position.get("fit_epoch", 0)), learn.n_epochs)
            learn.epochs = range(learn.fit_epochs_done, learn.n_epochs)
            learn.resumed_from = str(self.directory)

    def before_fit(self, learn: LearnerLike) -> None:
        self._pending = None
        self.manager = None
        if any(type(cb).__name__ == "LRFinderCB" for cb in learn.callbacks):
            return  # a trial fit whose state lr_find throws away
        self.manager = open_manager(self.directory, self.keep, self.async_save)
        later = [s for s in self.manager.all_steps() if s > learn.epochs_done]
        if later and not self.overwrite:
            self.manager.close()
            self.manager = None
            raise CheckpointError(
                f"{self.directory} already holds checkpoints of a run at epoch {max(later)}, beyond this Learner's "
                f"{learn.epochs_done}: continue it with CheckpointCB({str(self.directory)!r}, resume=True), replace "
                f"them with CheckpointCB(..., overwrite=True), or choose another directory")
        for s in later:
            self.manager.delete(s)

    def after_epoch(self, learn: LearnerLike) -> None:
        if self.manager is None or not learn.epoch_complete:
            return
        # a device copy: the next training call reuses the buffers of learn.state
        self._pending = (copy_state(learn.state), _position(learn, fit_epoch=learn.epoch + 1))
        if learn.epochs_done % self.every_n_epochs == 0:
            self._flush()

    def _flush(self) -> None:
        (state, position), self._pending = self._pending, None  # a failed write is not retried at cleanup
        if _save(self.manager, state, position):
            self.saved.append(position["epochs_done"])

    def cleanup_fit(self, learn: LearnerLike) -> None:
        if self.manager is None:
            return
        try:
            with _sigint_deferred():
                if self._pending is not None:
                    self._flush()
                self.manager.wait_until_finished()
        finally:
            self.manager.close()
            self.manager = None
