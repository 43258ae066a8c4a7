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
import gc
import hashlib
import json
import math
import os
import re
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization, traverse_util

from jaxlearn.callbacks import MetricsCB
from jaxlearn.learner import Callback, Learner
from jaxlearn.step import copy_state

__all__ = ["CheckpointCB", "CheckpointError", "save_checkpoint", "restore_checkpoint", "latest_step",
           "checkpoint_steps"]

FORMAT, VERSION = "jaxlearn-checkpoint", 2  # 2: the position record holds checksums
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
            "metrics": {k: float(v) for k, v in getattr(learn, "epoch_metrics", {}).items()},
            "history": _metrics_history(learn)}


def _metrics_history(learn: Learner) -> list[dict]:
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


def _host_arrays(sd: dict) -> dict[str, np.ndarray]:
    """The state dict's arrays on this host, keyed by their path (``params/Dense_0/kernel``).

    A replicated array spread over several processes is read from this process's own copy (the Learner
    replicates the whole state), so every process hashes the same full values.
    """
    flat = traverse_util.flatten_dict(sd, sep="/")
    local = {k: v.addressable_data(0) if isinstance(v, jax.Array) and not v.is_fully_addressable
             and v.is_fully_replicated else v for k, v in flat.items()}
    return {k: np.asarray(v) for k, v in jax.device_get(local).items()}


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).reshape(-1).view(np.uint8)).hexdigest()


def _record_checksum(record: dict) -> str:
    """The checksum of the position record's own JSON (everything but this checksum)."""
    body = {k: v for k, v in record.items() if k != "record_checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _sealed(position: dict, arrays: dict[str, np.ndarray]) -> dict:
    """The position record as saved: with each array's sha256 and a checksum of the record itself."""
    record = {**position, "checksums": {k: _digest(v) for k, v in arrays.items()}}
    record["record_checksum"] = _record_checksum(record)
    return record


def _save(manager: ocp.CheckpointManager, state, position: dict) -> bool:
    step = position["epochs_done"]
    if step in manager.all_steps():
        return False
    sd = _state_dict(state)
    # hashed from the host copy of the very arrays orbax writes, so any later change to the files is caught
    record = _sealed(position, _host_arrays(sd))
    with _sigint_deferred():
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(sd),
                                                   learner=ocp.args.JsonSave(record)), force=True)
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


class _Unreadable(CheckpointError):
    """A checkpoint whose files are damaged (not one of another model): an earlier one may still be good."""


def _short(e: BaseException) -> str:
    """An exception in one readable line: its root cause (orbax wraps tensorstore's error in one that only
    says which slice failed), without the JSON spec tensorstore appends."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = " ".join(re.split(r" \[tensorstore_spec|\. See full TensorStore details", str(e))[0].split())
    return f"{type(e).__name__}: {text[:400]}{'...' if len(text) > 400 else ''}"


def _location(location: str) -> tuple[str, int]:
    """An OCDBT location ``kind:base_path:relative_path:offset:length`` as (path, the byte it must reach)."""
    kind_and_paths, offset, length = location.rsplit(":", 2)
    _, base, relative = kind_and_paths.split(":", 2)
    return base + relative, int(offset) + int(length)


def _stored_values(state_dir: Path) -> dict[str, tuple[str, int]]:
    """Where each array chunk stored outside the B-tree lives: ``{key: (file, end byte)}``, from the OCDBT
    index (``{}`` when the index itself is unreadable: tensorstore's error names that file)."""
    import tensorstore as ts  # orbax's own storage layer
    try:
        store = ts.KvStore.open({"driver": "file", "path": f"{state_dir}/"}).result()
        root = ts.ocdbt.dump(store).result()["versions"][-1]["root"].get("location")
        found: dict[str, tuple[str, int]] = {}
        pending = [(b"", root)] if root else []
        while pending:  # B-tree nodes store their keys relative to the prefix their parents share
            prefix, location = pending.pop()
            for entry in ts.ocdbt.dump(store, location).result()["entries"]:
                if "location" in entry:
                    pending.append((prefix + entry["subtree_common_prefix"], entry["location"]))
                elif "indirect_value" in entry:
                    found[(prefix + entry["key"]).decode()] = _location(entry["indirect_value"])
        return found
    except Exception:  # a damaged index: the caller reports tensorstore's own error, which names the file
        return {}


def _leaf_name(key: str) -> str:
    """The state-dict path of a tensorstore key (``params.Dense_0.kernel/0.0``: the path joined by ".")."""
    return key.split("/")[0].replace(".", "/")


def _check_data_files(where: Path, stored: dict[str, tuple[str, int]]) -> None:
    """Each array's data file must be there and long enough. Checked before orbax reads them: its read errors
    name neither the file nor the array, and its abandoned parallel reads print tracebacks when one fails."""
    for key, (file, end) in sorted(stored.items()):
        path = where / "state" / file
        size = path.stat().st_size if path.is_file() else None
        if size is None or size < end:
            also = sorted({_leaf_name(k) for k, (f, _) in stored.items() if f == file} - {_leaf_name(key)})
            held = f" (it also holds {', '.join(also[:5])}{'...' if len(also) > 5 else ''})" if also else ""
            state = "is missing" if size is None else \
                f"is cut short: {size} bytes, the array's data ends at byte {end}"
            raise _Unreadable(f"checkpoint {where} is unreadable: array {_leaf_name(key)} cannot be read, its data "
                              f"file {path} {state}{held}")


def _read_failure(where: Path, stored: dict[str, tuple[str, int]], error: BaseException) -> str:
    """Why orbax failed to read a checkpoint's arrays, naming the array and the file that holds it."""
    cause = _short(error)
    key = re.search(r'Error reading "([^"]+)"', cause)
    if key is None or key.group(1) not in stored:
        return f"its arrays failed to load ({cause})"
    return (f"array {_leaf_name(key.group(1))} failed to load from {where / 'state' / stored[key.group(1)][0]}: "
            f"its bytes do not decode ({cause})")


def _abandoned_read(unraisable) -> bool:
    """An error of one of orbax's abandoned array reads: its coroutine finalized, or tensorstore finishing the
    read and calling back into the event loop orbax has closed."""
    return getattr(unraisable.object, "__name__", None) == "_read_array_index_and_device_put" or (
        isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed")


@contextlib.contextmanager
def _orbax_read_errors_reported_once():
    """Keep the tracebacks of orbax's abandoned reads off stderr when one array read fails.

    orbax reads the arrays concurrently and, when one read fails, closes its event loop with the others still
    pending: their coroutines print "Exception ignored in: <coroutine ...>" when collected, and tensorstore
    prints "Event loop is closed" when it finishes them. The failure is reported once, by the CheckpointError.
    """
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if not _abandoned_read(unraisable):
            previous(unraisable)
    sys.unraisablehook = hook
    try:
        yield
    except Exception as e:
        while e is not None:  # the failed read's frames hold the abandoned coroutines: let them go now
            traceback.clear_frames(e.__traceback__)
            e = e.__cause__ or e.__context__
        gc.collect()
        time.sleep(0.2)  # local reads still in flight finish (and call back) while the hook is in place
        raise
    finally:
        sys.unraisablehook = previous


def _describe(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    flat = traverse_util.flatten_dict(tree, sep="/") if isinstance(tree, dict) else {}
    return {k: (tuple(v.shape), str(np.dtype(v.dtype))) for k, v in flat.items()}


def _check_structure(where: Path, saved: Any, target: dict) -> None:
    """Compare the checkpoint's arrays with the Learner's: a different model / optimizer is named here."""
    have, want = _describe(saved), _describe(target)
    if not have:
        raise _Unreadable(f"checkpoint {where} is unreadable: its array metadata lists no arrays")
    problems = [f"{k}: checkpoint {have[k][0]} {have[k][1]}, Learner {want[k][0]} {want[k][1]}"
                for k in want if k in have and have[k] != want[k]]
    problems += [f"{k}: missing from the checkpoint" for k in want if k not in have]
    problems += [f"{k}: in the checkpoint but not in this Learner" for k in have if k not in want]
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise CheckpointError(f"checkpoint {where} was written for a different model or "
                              f"optimizer: " + "; ".join(problems[:8]) + more)


def _check_record(where: Path, position: Any) -> None:
    if not isinstance(position, dict) or position.get("format") != FORMAT:
        raise _Unreadable(f"{where} is not a jaxlearn checkpoint (no jaxlearn position record)")
    # VERSION-1 records carry no checksums and are taken as they are; any later one must match its own
    sealed = position.get("version") != 1 or "record_checksum" in position
    if sealed and position.get("record_checksum") != _record_checksum(position):
        raise _Unreadable(f"checkpoint {where} is corrupt: its learner position record (JSON) does not match "
                          f"the checksum saved in it")


def _check_arrays(where: Path, restored: dict, checksums: dict[str, str]) -> None:
    bad = [k for k, v in _host_arrays(restored).items() if checksums.get(k) != _digest(v)]
    if bad:
        more = f" (and {len(bad) - 1} more: {', '.join(bad[1:6])}{'...' if len(bad) > 6 else ''})" if bad[1:] else ""
        raise _Unreadable(f"checkpoint {where} is corrupt: array {bad[0]} does not match the checksum saved with "
                          f"it{more}")


def _load(manager: ocp.CheckpointManager, directory: Path, step: int, state) -> tuple[dict, dict]:
    """Read and check checkpoint ``step``: (its position record, its state dict). Damaged files raise
    :class:`_Unreadable`; a checkpoint of another model raises :class:`CheckpointError`."""
    where = directory / str(step)
    try:
        position = manager.restore(step, args=ocp.args.Composite(learner=ocp.args.JsonRestore())).learner
    except Exception as e:
        raise _Unreadable(f"checkpoint {where} is unreadable: its learner position (JSON) failed to load "
                          f"({_short(e)})") from e
    _check_record(where, position)
    target = _state_dict(state)
    try:
        with _orbax_read_errors_reported_once():  # it reads each array's metadata concurrently too
            saved = manager.item_metadata(step)["state"]
        saved = getattr(saved, "tree", saved)
    except Exception as e:
        raise _Unreadable(f"checkpoint {where} is unreadable: its array metadata failed to load "
                          f"({_short(e)})") from e
    _check_structure(where, saved, target)
    stored = _stored_values(where / "state")
    _check_data_files(where, stored)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
        with _orbax_read_errors_reported_once():
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except Exception as e:
        raise _Unreadable(f"checkpoint {where} is unreadable: {_read_failure(where, stored, e)}") from e
    restored = dict(restored.state)
    if "checksums" in position:  # VERSION-1 checkpoints were saved without
        _check_arrays(where, restored, position["checksums"])
    return position, restored


def _load_latest_readable(manager: ocp.CheckpointManager, directory: Path, steps: list[int],
                          state) -> tuple[dict, dict]:
    """The latest checkpoint that reads back intact, warning about each damaged one passed over."""
    skipped: list[str] = []
    for step in reversed(steps):
        try:
            loaded = _load(manager, directory, step, state)
        except _Unreadable as e:
            skipped.append(str(e))
            continue
        for reason in skipped:
            warnings.warn(f"{reason}; restored the previous good checkpoint, {directory / str(step)}, instead",
                          stacklevel=3)
        return loaded
    raise CheckpointError(f"no readable checkpoint in {directory}: " + "; ".join(skipped))


def restore_checkpoint(learn: Learner, directory: str | os.PathLike, step: int | None = None) -> dict:
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
    manager = _manager(directory, read_only=True)
    try:
        steps = sorted(manager.all_steps())
        if not steps:
            unfinished = sorted(p.name for p in directory.iterdir() if _TMP_MARK in p.name)
            raise CheckpointError(f"no finished checkpoint in {directory}" + (
                f": only unfinished writes ({', '.join(unfinished)}) from an interrupted save" if unfinished else ""))
        if step is None:
            position, sd = _load_latest_readable(manager, directory, steps, learn.state)
        elif step not in steps:
            raise CheckpointError(f"no checkpoint {step} in {directory}; finished checkpoints: {steps}")
        else:
            try:
                position, sd = _load(manager, directory, step, learn.state)
            except _Unreadable as e:
                others = [s for s in steps if s != step]
                raise _Unreadable(f"{e}; other checkpoints there: {others} (restore one with step=...)" if others
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

    def resume_fit(self, learn: Learner) -> None:
        """With ``resume=True`` and a finished checkpoint in the directory: restore it and skip the epochs of
        this fit that it had finished, so the fit continues exactly where it stopped."""
        learn.resumed_from, learn.resumed_history = None, None
        if self.resume and latest_step(self.directory) is not None:
            position = restore_checkpoint(learn, self.directory)
            learn.resumed_history = position.get("history")
            learn.fit_epochs_done = min(int(position.get("fit_epoch", 0)), learn.n_epochs)
            learn.epochs = range(learn.fit_epochs_done, learn.n_epochs)
            learn.resumed_from = str(self.directory)

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
                f"{learn.epochs_done}: continue it with CheckpointCB({str(self.directory)!r}, resume=True), replace "
                f"them with CheckpointCB(..., overwrite=True), or choose another directory")
        for s in later:
            self.manager.delete(s)

    def after_epoch(self, learn: Learner) -> None:
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
