"""Checkpoints with orbax: save the whole run, resume it bit for bit.

A checkpoint holds the complete :class:`~jaxlearn.step.TrainState` — params, norm statistics (the model's
other collections), optimizer state (including injected hyperparameters such as the learning rate), the
step and the PRNG key — and the Learner's position (``epochs_done``, the epoch reached in the current fit,
its seed). Each is an orbax step directory named by ``epochs_done``::

    learn.fit(5, callbacks=[CheckpointCB("ckpt", every_n_epochs=1, keep=3)])
    # interrupted (Ctrl-C, a crash, a preempted machine) ... then, in a new process:
    learn = Learner(...same model, data, optimizer, seed...)
    learn.fit(5, callbacks=[CheckpointCB("ckpt", keep=3, resume=True)])   # epochs already done are skipped

Safety: orbax writes each checkpoint into a temporary directory and renames it when complete, so a write
that dies midway never replaces or corrupts an earlier checkpoint (the unfinished one is ignored). A Ctrl-C or
SIGTERM arriving while a checkpoint is being written is held back until the write is done, and
:class:`CheckpointCB` always saves the last finished epoch when the fit ends, however it ends (SIGTERM — a
preempted machine, ``kill``, ``docker stop`` — included: it ends the fit with :class:`Terminated`). One run
writes a directory at a time (:mod:`~jaxlearn.callbacks.checkpoint_guard`'s lock); a write that fails (a full
disk) stops the training with one error naming the checkpoint and why.

A resume continues the run as it was, except where this Learner says otherwise: an injected hyperparameter
that differs from the checkpoint's (``fit(lr=...)``, ``optimizer=partial(momentum, beta=0.5)``) is kept, with a
warning naming both values; a training set of another size is named in a warning too (the epochs go on, but
the run is no longer the one it continues).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from jaxlearn.callback import Callback, LearnerLike
from jaxlearn.callbacks.checkpoint_files import (FORMAT, TMP_MARK, VERSION, CheckpointError, Unreadable, host_arrays,
                                                 load, load_latest_readable, open_manager, sealed, state_dict)
from jaxlearn.callbacks.checkpoint_guard import (HeldOrbaxErrors, Terminated, lock_directory, restore_sigterm,
                                                 signals_deferred, stop_on_sigterm, unlock_directory, write_error)
from jaxlearn.callbacks.core import MetricsCB
from jaxlearn.optim.hyperparams import key_name
from jaxlearn.trees import copy_state

__all__ = ["CheckpointCB", "CheckpointError", "Terminated", "save_checkpoint", "restore_checkpoint", "latest_step",
           "checkpoint_steps"]


# ------------------------------------------------------------------------------------------- helpers


def _position(learn: LearnerLike, fit_epoch: int | None = None) -> dict:
    return {"format": FORMAT, "version": VERSION, "epochs_done": int(learn.epochs_done),
            "fit_epoch": int(learn.fit_epochs_done if fit_epoch is None else fit_epoch),
            "n_epochs": int(getattr(learn, "n_epochs", 0)), "step": int(np.asarray(jax.device_get(learn.state.step))),
            "seed": int(learn.seed), "n_devices": int(learn.n_devices),
            "n_train": len(learn.dls.train), "steps_per_epoch": int(learn.dls.train.n_batches),
            "metrics": {k: float(v) for k, v in getattr(learn, "epoch_metrics", {}).items()},
            "history": _metrics_history(learn)}


def _metrics_history(learn: LearnerLike) -> list[dict]:
    """The epoch rows of the Learner's MetricsCB (restored on resume, so the history is whole); a non-finite
    number is stored as null, keeping the record strict JSON."""
    cb = next((cb for cb in learn.callbacks if isinstance(cb, MetricsCB)), None)
    return [{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
            for row in getattr(cb, "history", [])]


def _agreed(flag: bool) -> bool:
    """Process 0's ``flag``, in every process (one process: ``flag``)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def _has_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` holds a finished checkpoint: process 0 looks (at the files: opening orbax's manager is
    a step all processes take together) and every process goes by its answer."""
    found = jax.process_index() == 0 and directory.is_dir() and bool(ocp.path.step.checkpoint_steps(directory))
    return _agreed(found)


def _save(manager: ocp.CheckpointManager, state, position: dict) -> bool:
    step = position["epochs_done"]
    if step in manager.all_steps():
        return False
    sd = state_dict(state)
    # hashed from the host copy of the very arrays orbax writes, so any later change to the files is caught
    record = sealed(position, host_arrays(sd))
    with signals_deferred():
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(sd),
                                                   learner=ocp.args.JsonSave(record)), force=True)
    return True


class _Writer:
    """A checkpoint directory open for this run's writes: its lock (taken by process 0), orbax's manager, the
    write in progress, and orbax's error logs held back (a failed write raises one :func:`write_error`)."""

    def __init__(self, directory: Path, keep: int | None, async_save: bool):
        self.directory, self.writing, self.failed = directory, None, False
        self.lock = self._lock()
        self.held = HeldOrbaxErrors()
        try:
            self.manager = open_manager(directory, keep, async_save)
        except BaseException:
            self._let_go()
            raise

    def _lock(self) -> Path | None:
        lock, refused = None, None
        if jax.process_index() == 0:
            try:
                lock = lock_directory(self.directory)
            except CheckpointError as e:
                refused = e
        if not _agreed(refused is None):
            raise refused or CheckpointError(f"process 0 could not lock the checkpoint directory {self.directory} "
                                             f"(its error says why)")
        return lock

    def save(self, state, position: dict) -> bool:
        """Start writing ``position["epochs_done"]`` (after the write before it: its failure is named as its own);
        False if that checkpoint exists."""
        self.check(wait=True)
        try:
            saved = _save(self.manager, state, position)
        except Exception as e:
            raise self._failure(position["epochs_done"], e) from e
        self.writing = position["epochs_done"] if saved else None
        return saved

    def check(self, wait: bool) -> None:
        """Raise the failure of the write in progress once it has ended (``wait``: wait for it to end)."""
        if self.writing is None or (not wait and self.manager.is_saving_in_progress()):
            return
        step, self.writing = self.writing, None
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise self._failure(step, e) from e

    def _failure(self, step: int, error: Exception) -> CheckpointError:
        self.failed = True
        return write_error(self.directory, step, error, sorted(s for s in self.manager.all_steps() if s != step))

    def close(self) -> None:
        try:
            with contextlib.suppress(Exception) if self.failed else contextlib.nullcontext():
                self.manager.close()  # after a failed write orbax raises its error again: reported already
        finally:
            self._let_go()

    def _let_go(self) -> None:
        self.held.release(reported=self.failed)
        if self.lock is not None:
            unlock_directory(self.lock)


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
    """Save ``learn``'s state and position now (synchronously) as step ``learn.epochs_done`` in ``directory``,
    keeping the latest ``keep`` checkpoints there (``None``: all).

    Returns the checkpoint's path, or None when a checkpoint of this ``epochs_done`` already exists. Raises
    :class:`CheckpointError` when another run holds the directory or the write fails (naming why).
    """
    writer = _Writer(Path(directory).absolute(), keep, async_save=False)
    try:
        saved = writer.save(learn.state, _position(learn))
        writer.check(wait=True)
    finally:
        writer.close()
    return writer.directory / str(learn.epochs_done) if saved else None


def _hyperparams(opt_state) -> dict[str, tuple[str, jax.Array]]:
    """The injected hyperparameters of ``opt_state``: ``{path: (name, value)}``."""
    return {jax.tree_util.keystr(path): (key_name(path[-1]), leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]
            if len(path) >= 2 and key_name(path[-2]) == "hyperparams"}


def _on_host(a: jax.Array) -> np.ndarray:
    return np.asarray(jax.device_get(a if a.is_fully_addressable else a.addressable_data(0)))


def _number(a: np.ndarray) -> str:
    return f"{float(a.reshape(-1)[0]):g}" if a.size == 1 else str(a.tolist())


def _keep_explicit_hyperparams(learn: LearnerLike, explicit: dict[str, tuple[str, jax.Array]]) -> None:
    """Put back this Learner's injected hyperparameters where the restored ones differ, with a warning naming both;
    those a schedule of this fit sets before every step are the schedule's anyway and are left alone."""
    total = getattr(learn, "n_epochs", 1) * learn.dls.train.n_batches
    scheduled = {name for cb in learn.callbacks if hasattr(cb, "hyper_schedules") for name in cb.hyper_schedules(total)}
    restored = _hyperparams(learn.state.opt_state)
    differ = {path: (name, _on_host(value), _on_host(restored[path][1])) for path, (name, value) in explicit.items()
              if name not in scheduled and not np.array_equal(_on_host(value), _on_host(restored[path][1]))}
    if not differ:
        return
    learn.state = learn.state.replace(opt_state=jax.tree_util.tree_map_with_path(
        lambda path, leaf: explicit[key][1] if (key := jax.tree_util.keystr(path)) in differ else leaf,
        learn.state.opt_state))
    for name, mine, saved in {name: (name, mine, saved) for name, mine, saved in differ.values()}.values():
        warnings.warn(f"resuming with {name} {_number(mine)}, this Learner's (given to fit or when the Learner was "
                      f"made), not the checkpoint's {_number(saved)}", stacklevel=3)


def _check_training_set(learn: LearnerLike, position: dict) -> None:
    """Warn when the checkpoint was trained on a training set of another size (records before version 3 do not
    say)."""
    saved = position.get("n_train"), position.get("steps_per_epoch")
    here = len(learn.dls.train), learn.dls.train.n_batches
    if saved[0] is not None and saved != here:
        warnings.warn(f"the checkpoint was trained on {saved[0]} examples ({saved[1]} steps per epoch), this "
                      f"Learner's training set has {here[0]} ({here[1]} steps per epoch): the epochs are counted on, "
                      f"but the steps, the schedules over them and the data order are no longer the run's",
                      stacklevel=3)


def restore_checkpoint(learn: LearnerLike, directory: str | os.PathLike, step: int | None = None) -> dict:
    """Load a checkpoint of ``directory`` into ``learn``: its state, ``epochs_done`` and seed.

    ``step=None`` loads the latest checkpoint that reads back intact: a damaged latest one (unreadable
    files, an array or the position record not matching the checksums saved with it) is passed over with
    a warning naming it and why. An explicit ``step`` loads that one or raises.

    This Learner's injected hyperparameters win where they differ from the checkpoint's (those it was made with,
    an lr given to the fit resuming): each is kept, with a warning naming both values. A checkpoint trained on a
    training set of another size is restored with a warning naming both sizes.

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
    explicit = _hyperparams(learn.state.opt_state)
    learn.state = serialization.from_state_dict(learn.state, sd)
    _keep_explicit_hyperparams(learn, explicit)
    _check_training_set(learn, position)
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
    (which deletes those later checkpoints). The LR finder's trial fits are never saved. ``directory`` holds
    the checkpoints (one orbax step directory each).
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
        self.writer, self._pending, self._sigterm = None, None, None  # cleanup_fit is safe without before_fit
        self.saved: list[int] = []  # steps this callback wrote

    def resume_fit(self, learn: LearnerLike) -> None:
        """With ``resume=True`` and a finished checkpoint in the directory: restore it and skip the epochs of
        this fit that it had finished, so the fit continues exactly where it stopped. In several processes,
        process 0 decides whether there is one, so all of them resume or none does."""
        learn.resumed_from, learn.resumed_history = None, None
        if self.resume and _has_checkpoint(self.directory):
            position = restore_checkpoint(learn, self.directory)
            learn.resumed_history = position.get("history")
            learn.fit_epochs_done = min(int(position.get("fit_epoch", 0)), learn.n_epochs)
            learn.epochs = range(learn.fit_epochs_done, learn.n_epochs)
            learn.resumed_from = str(self.directory)

    def before_fit(self, learn: LearnerLike) -> None:
        """Open the directory (nothing for an LR-finder trial fit) and take its lock; refuse it when it holds
        checkpoints of a run beyond this Learner's ``epochs_done``, unless ``overwrite``, which deletes them.
        From here to the fit's end SIGTERM stops the fit after saving (:class:`Terminated`)."""
        self._pending, self.writer, self._sigterm = None, None, None
        if any(type(cb).__name__ == "LRFinderCB" for cb in learn.callbacks):
            return  # a trial fit whose state lr_find throws away
        self.writer = _Writer(self.directory, self.keep, self.async_save)
        later = [s for s in self.writer.manager.all_steps() if s > learn.epochs_done]
        if later and not self.overwrite:
            self.writer.close()
            self.writer = None
            raise CheckpointError(
                f"{self.directory} already holds checkpoints of a run at epoch {max(later)}, beyond this Learner's "
                f"{learn.epochs_done}: continue it with CheckpointCB({str(self.directory)!r}, resume=True), replace "
                f"them with CheckpointCB(..., overwrite=True), or choose another directory")
        for s in later:
            self.writer.manager.delete(s)
        self._sigterm = stop_on_sigterm()

    def after_epoch(self, learn: LearnerLike) -> None:
        """After a finished epoch: keep a copy of the state and save it every ``every_n_epochs`` epochs."""
        if self.writer is None or not learn.epoch_complete:
            return
        self.writer.check(wait=False)  # a write that failed in the background stops the fit now
        # a device copy: the next training call reuses the buffers of learn.state
        self._pending = (copy_state(learn.state), _position(learn, fit_epoch=learn.epoch + 1))
        if learn.epochs_done % self.every_n_epochs == 0:
            self._flush()

    def _flush(self) -> None:
        (state, position), self._pending = self._pending, None  # a failed write is not retried at cleanup
        if self.writer.save(state, position):
            self.saved.append(position["epochs_done"])

    def cleanup_fit(self, learn: LearnerLike) -> None:
        """However the fit ends: save the last finished epoch if it is not yet, wait for the writes, close."""
        if self.writer is None:
            return
        try:
            with signals_deferred():
                if self._pending is not None and not self.writer.failed:
                    self._flush()
                self.writer.check(wait=True)
        finally:
            restore_sigterm(self._sigterm)
            self.writer.close()
            self.writer = None
