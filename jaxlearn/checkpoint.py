"""Checkpoints with orbax: save the whole run, resume it bit for bit.

A checkpoint holds the complete :class:`~jaxlearn.learner.TrainState` — params, norm statistics (the model's
other collections), optimizer state (including injected hyperparameters such as the learning rate), the
step and the PRNG key — and the Learner's position (``epochs_done``, the epoch reached in the current fit,
its seed). Each is an orbax step directory named by ``epochs_done``::

    learn.fit(5, callbacks=[CheckpointCB("ckpt", every_n_epochs=1, keep=3)])
    # interrupted (Ctrl-C, a crash, a preempted machine) ... then, in a new process:
    learn = Learner(...same model, data, optimizer, seed...)
    learn.fit(5, callbacks=[CheckpointCB("ckpt", keep=3)], resume_from="ckpt")   # epochs already done are skipped

Safety: orbax writes each checkpoint into a temporary directory and renames it when complete, so a write
that dies midway never replaces or corrupts an earlier checkpoint (the unfinished one is ignored). A Ctrl-C
arriving while a checkpoint is being written is held back until the write is done, and
:class:`CheckpointCB` always saves the last finished epoch when the fit ends, however it ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization, traverse_util

from jaxlearn.learner import Callback, Learner

__all__ = ["CheckpointCB", "CheckpointError", "save_checkpoint", "restore_checkpoint", "latest_step",
           "checkpoint_steps"]

FORMAT, VERSION = "jaxlearn-checkpoint", 1
_TMP_MARK = ".orbax-checkpoint-tmp"


class CheckpointError(ValueError):
    """A checkpoint is missing, unfinished, unreadable or for a different model; the message says which."""


# ------------------------------------------------------------------------------------------- helpers

def _manager(directory: str | os.PathLike, keep: int | None = None, async_save: bool = True,
             read_only: bool = False) -> ocp.CheckpointManager:
    # "read_only" here means only "do not create the directory": orbax's read_only mode logs warnings
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                           create=not read_only)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options,
                                 item_handlers={"state": ocp.StandardCheckpointHandler(),
                                                "learner": ocp.JsonCheckpointHandler()})


def _state_dict(state) -> dict:
    """The TrainState's pytree fields as nested dicts; the typed PRNG key as its raw uint32 data."""
    sd = serialization.to_state_dict(state)
    sd["rng"] = jax.random.key_data(state.rng)
    return sd


def _position(learn: Learner, fit_epoch: int | None = None) -> dict:
    return {"format": FORMAT, "version": VERSION, "epochs_done": int(learn.epochs_done),
            "fit_epoch": int(learn.fit_epochs_done if fit_epoch is None else fit_epoch),
            "n_epochs": int(getattr(learn, "n_epochs", 0)), "step": int(np.asarray(jax.device_get(learn.state.step))),
            "seed": int(learn.seed), "n_devices": int(learn.n_devices),
            "metrics": {k: float(v) for k, v in getattr(learn, "epoch_metrics", {}).items()}}


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
    with _sigint_deferred():
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_state_dict(state)),
                                                   learner=ocp.args.JsonSave(position)), force=True)
    return True


def checkpoint_steps(directory: str | os.PathLike) -> list[int]:
    """The finished checkpoints in ``directory`` (their ``epochs_done``), oldest first; [] if none."""
    if not Path(directory).is_dir():
        return []
    manager = _manager(directory, read_only=True)
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def latest_step(directory: str | os.PathLike) -> int | None:
    """The latest finished checkpoint in ``directory``, or None (e.g. to decide whether to resume)."""
    steps = checkpoint_steps(directory)
    return steps[-1] if steps else None


# ---------------------------------------------------------------------------------------- save / restore

def save_checkpoint(learn: Learner, directory: str | os.PathLike, keep: int | None = None) -> Path | None:
    """Save ``learn``'s state and position now (synchronously) as step ``learn.epochs_done``.

    Returns the checkpoint's path, or None when a checkpoint of this ``epochs_done`` already exists.
    """
    manager = _manager(directory, keep=keep, async_save=False)
    try:
        saved = _save(manager, learn.state, _position(learn))
        manager.wait_until_finished()
    finally:
        manager.close()
    return Path(directory).absolute() / str(learn.epochs_done) if saved else None


def _short(e: Exception) -> str:
    """An exception in one readable line (tensorstore appends its whole JSON spec)."""
    text = str(e).split(" [tensorstore_spec")[0].strip()
    return f"{type(e).__name__}: {text[:400]}{'...' if len(text) > 400 else ''}"


def _describe(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    flat = traverse_util.flatten_dict(tree, sep="/") if isinstance(tree, dict) else {}
    return {k: (tuple(v.shape), str(np.dtype(v.dtype))) for k, v in flat.items()}


def _check_structure(directory: Path, step: int, saved: Any, target: dict) -> None:
    """Compare the checkpoint's arrays with the Learner's: a different model / optimizer is named here."""
    have, want = _describe(saved), _describe(target)
    problems = [f"{k}: checkpoint {have[k][0]} {have[k][1]}, Learner {want[k][0]} {want[k][1]}"
                for k in want if k in have and have[k] != want[k]]
    problems += [f"{k}: missing from the checkpoint" for k in want if k not in have]
    problems += [f"{k}: in the checkpoint but not in this Learner" for k in have if k not in want]
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise CheckpointError(f"checkpoint {directory / str(step)} was written for a different model or "
                              f"optimizer: " + "; ".join(problems[:8]) + more)


def restore_checkpoint(learn: Learner, directory: str | os.PathLike, step: int | None = None) -> dict:
    """Load a checkpoint (default: the latest) into ``learn``: its state, ``epochs_done`` and seed.

    Returns the saved position (``epochs_done``, ``fit_epoch``, ``step``, ``seed``, last ``metrics``, ...).
    Raises :class:`CheckpointError` with what is wrong: no such directory, no finished checkpoint in it,
    a checkpoint of another model, or unreadable files (naming the other checkpoints to fall back on).
    """
    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint directory {directory}: nothing to resume from")
    manager = _manager(directory, read_only=True)
    try:
        steps = sorted(manager.all_steps())
        if not steps:
            unfinished = sorted(p.name for p in directory.iterdir() if _TMP_MARK in p.name)
            raise CheckpointError(f"no finished checkpoint in {directory}" + (
                f": only unfinished writes ({', '.join(unfinished)}) from an interrupted save" if unfinished else ""))
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise CheckpointError(f"no checkpoint {step} in {directory}; finished checkpoints: {steps}")
        others = [s for s in steps if s != step]
        fallback = f"; other checkpoints there: {others} (restore one with step=...)" if others else ""
        try:
            position = manager.restore(step, args=ocp.args.Composite(learner=ocp.args.JsonRestore())).learner
        except Exception as e:
            raise CheckpointError(f"checkpoint {directory / str(step)} is unreadable: its learner position "
                                  f"(JSON) failed to load ({_short(e)}){fallback}") from e
        if not isinstance(position, dict) or position.get("format") != FORMAT:
            raise CheckpointError(f"{directory / str(step)} is not a jaxlearn checkpoint (no jaxlearn position "
                                  f"record){fallback}")
        target = _state_dict(learn.state)
        try:
            saved = manager.item_metadata(step)["state"]
            saved = getattr(saved, "tree", saved)
        except Exception as e:
            raise CheckpointError(f"checkpoint {directory / str(step)} is unreadable: its array metadata failed "
                                  f"to load ({_short(e)}){fallback}") from e
        _check_structure(directory, step, saved, target)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        except Exception as e:
            raise CheckpointError(f"checkpoint {directory / str(step)} is unreadable: its arrays failed to load "
                                  f"({_short(e)}){fallback}") from e
    finally:
        manager.close()
    sd = dict(restored.state)
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
    stops with an error unless it resumes from it (``fit(..., resume_from=directory)``) or ``overwrite=True``
    (which deletes those later checkpoints). The LR finder's trial fits are never saved.
    """
    order = 90  # after the metrics callbacks, so a saved position carries the epoch's metrics

    def __init__(self, directory: str | os.PathLike, every_n_epochs: int = 1, keep: int | None = None,
                 async_save: bool = True, overwrite: bool = False):
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be a positive integer, got {every_n_epochs!r}")
        if keep is not None and (not isinstance(keep, int) or keep < 1):
            raise ValueError(f"keep must be a positive integer or None (keep all), got {keep!r}")
        self.directory = Path(directory).absolute()
        self.every_n_epochs, self.keep, self.async_save, self.overwrite = every_n_epochs, keep, async_save, overwrite
        self.saved: list[int] = []  # steps this callback wrote

    def before_fit(self, learn: Learner) -> None:
        self._pending = None
        self.manager = None
        if any(type(cb).__name__ == "LRFinderCB" for cb in learn.callbacks):
            return  # a trial fit whose state lr_find throws away
        self.manager = _manager(self.directory, self.keep, self.async_save)
        later = [s for s in self.manager.all_steps() if s > learn.epochs_done]
        if later and not self.overwrite:
            self.manager.close()
            self.manager = None
            raise CheckpointError(
                f"{self.directory} already holds checkpoints of a run at epoch {max(later)}, beyond this Learner's "
                f"{learn.epochs_done}: continue it with fit(..., resume_from={str(self.directory)!r}), replace them "
                f"with CheckpointCB(..., overwrite=True), or choose another directory")
        for s in later:
            self.manager.delete(s)

    def after_epoch(self, learn: Learner) -> None:
        if self.manager is None or not learn.epoch_complete:
            return
        self._pending = (learn.state, _position(learn, fit_epoch=learn.epoch + 1))
        if learn.epochs_done % self.every_n_epochs == 0:
            self._flush()

    def _flush(self) -> None:
        (state, position), self._pending = self._pending, None  # a failed write is not retried at cleanup
        if _save(self.manager, state, position):
            self.saved.append(position["epochs_done"])

    def cleanup_fit(self, learn: Learner) -> None:
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
