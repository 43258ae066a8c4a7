"""A checkpoint's files: orbax's manager, the state as arrays, the checksums saved with them, and reading a
checkpoint back with every kind of damage named before anything reaches the Learner.

Each checkpoint (format version 3) stores, in its JSON position record, the sha256 of every array of the state
keyed by its path (``params/Conv_0/kernel``), the size of the training set, and a checksum of the record itself.
A restore checks, in order: the record (parses, matches its checksum), the arrays' metadata against the
Learner's (another model is named by its arrays), each array's data file (there, long enough), the bytes
(decode), and each array against its checksum. Damage raises :class:`Unreadable` (an earlier checkpoint may
still be good); another model raises :class:`CheckpointError`. An RNN's carried state is restored at the size
it was saved with (the Learner starts it afresh, for its batch size, at every epoch).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import re
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization, traverse_util

FORMAT, VERSION = "jaxlearn-checkpoint", 3  # 2: the record holds checksums; 3: the training set's size
CARRY_PATH = "model_state/carry/"  # an RNN's carried state (jaxlearn.step.CARRY) in the state dict
TMP_MARK = ".orbax-checkpoint-tmp"  # orbax's name for a checkpoint still being written


class CheckpointError(ValueError):
    """A checkpoint is missing, unfinished, unreadable or for a different model; the message says which."""


class Unreadable(CheckpointError):
    """A checkpoint whose files are damaged (not one of another model): an earlier one may still be good."""


def open_manager(directory: str | os.PathLike, keep: int | None = None, async_save: bool = True,
             read_only: bool = False) -> ocp.CheckpointManager:
    """An orbax ``CheckpointManager`` over ``directory`` for jaxlearn's checkpoints (the state's arrays and the
    JSON position record), keeping the latest ``keep`` (``None``: all), writing asynchronously with
    ``async_save``; ``read_only`` only means "do not create the directory"."""
    # "read_only" here means only "do not create the directory": orbax's read_only mode logs warnings
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                           create=not read_only)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options,
                                 item_handlers={"state": ocp.StandardCheckpointHandler(),
                                                "learner": ocp.JsonCheckpointHandler()})


def state_dict(state) -> dict:
    """The pytree fields of ``state`` (a TrainState) as nested dicts; the typed PRNG key as its raw uint32
    data."""
    sd = serialization.to_state_dict(state)
    sd["rng"] = jax.random.key_data(state.rng)
    return sd


def host_arrays(sd: dict) -> dict[str, np.ndarray]:
    """The arrays of the state dict ``sd`` on this host, keyed by their path (``params/Dense_0/kernel``).

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


def sealed(position: dict, arrays: dict[str, np.ndarray]) -> dict:
    """The ``position`` record as saved: with the sha256 of each of ``arrays`` (by path) and a checksum of the
    record itself."""
    record = {**position, "checksums": {k: _digest(v) for k, v in arrays.items()}}
    record["record_checksum"] = _record_checksum(record)
    return record


def short_error(e: BaseException) -> str:
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
            raise Unreadable(f"checkpoint {where} is unreadable: array {_leaf_name(key)} cannot be read, its data "
                              f"file {path} {state}{held}")


def _read_failure(where: Path, stored: dict[str, tuple[str, int]], error: BaseException) -> str:
    """Why orbax failed to read a checkpoint's arrays, naming the array and the file that holds it."""
    cause = short_error(error)
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
        raise Unreadable(f"checkpoint {where} is unreadable: its array metadata lists no arrays")
    problems = [f"{k}: checkpoint {have[k][0]} {have[k][1]}, Learner {want[k][0]} {want[k][1]}"
                for k in want if k in have and have[k] != want[k] and not _carry_resized(k, have[k], want[k])]
    problems += [f"{k}: missing from the checkpoint" for k in want if k not in have]
    problems += [f"{k}: in the checkpoint but not in this Learner" for k in have if k not in want]
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise CheckpointError(f"checkpoint {where} was written for a different model or "
                              f"optimizer: " + "; ".join(problems[:8]) + more)


def _carry_resized(key: str, have: tuple, want: tuple) -> bool:
    """A carried state sized for another batch (the one it last saw; a new Learner's is sized for 2 examples):
    same dtype and rank. It is started afresh at every epoch, so its size never reaches the next step."""
    return key.startswith(CARRY_PATH) and have[1] == want[1] and len(have[0]) == len(want[0])


def _restore_target(saved: Any, target: dict) -> dict:
    """What to read the arrays into: the Learner's shapes and shardings, a carried state at its saved size."""
    shapes = _describe(saved)

    def leaf(path, a):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        spec = ocp.utils.to_shape_dtype_struct(a)
        if name.startswith(CARRY_PATH) and shapes[name][0] != spec.shape:
            return jax.ShapeDtypeStruct(shapes[name][0], spec.dtype, sharding=spec.sharding)
        return spec
    return jax.tree_util.tree_map_with_path(leaf, target)


def _check_record(where: Path, position: Any) -> None:
    if not isinstance(position, dict) or position.get("format") != FORMAT:
        raise Unreadable(f"{where} is not a jaxlearn checkpoint (no jaxlearn position record)")
    if not isinstance(position.get("version"), int) or position["version"] > VERSION:
        raise CheckpointError(f"checkpoint {where} has format version {position.get('version')!r}, newer than this "
                              f"jaxlearn reads (up to {VERSION}): restore it with the jaxlearn that wrote it")
    # VERSION-1 records carry no checksums and are taken as they are; any later one must match its own
    sealed = position.get("version") != 1 or "record_checksum" in position
    if sealed and position.get("record_checksum") != _record_checksum(position):
        raise Unreadable(f"checkpoint {where} is corrupt: its learner position record (JSON) does not match "
                          f"the checksum saved in it")


def _check_arrays(where: Path, restored: dict, checksums: dict[str, str]) -> None:
    bad = [k for k, v in host_arrays(restored).items() if checksums.get(k) != _digest(v)]
    if bad:
        more = f" (and {len(bad) - 1} more: {', '.join(bad[1:6])}{'...' if len(bad) > 6 else ''})" if bad[1:] else ""
        raise Unreadable(f"checkpoint {where} is corrupt: array {bad[0]} does not match the checksum saved with "
                          f"it{more}")


def load(manager: ocp.CheckpointManager, directory: Path, step: int, state) -> tuple[dict, dict]:
    """Read and check checkpoint ``step`` of ``directory`` through ``manager``, against the Learner's ``state``:
    (its position record, its state dict). Damaged files raise :class:`Unreadable`; a checkpoint of another
    model raises :class:`CheckpointError`."""
    where = directory / str(step)
    try:
        position = manager.restore(step, args=ocp.args.Composite(learner=ocp.args.JsonRestore())).learner
    except Exception as e:
        raise Unreadable(f"checkpoint {where} is unreadable: its learner position (JSON) failed to load "
                          f"({short_error(e)})") from e
    _check_record(where, position)
    target = state_dict(state)
    try:
        with _orbax_read_errors_reported_once():  # it reads each array's metadata concurrently too
            saved = manager.item_metadata(step)["state"]
        saved = getattr(saved, "tree", saved)
    except Exception as e:
        raise Unreadable(f"checkpoint {where} is unreadable: its array metadata failed to load "
                          f"({short_error(e)})") from e
    _check_structure(where, saved, target)
    stored = _stored_values(where / "state")
    _check_data_files(where, stored)
    abstract = _restore_target(saved, target)
    try:
        with _orbax_read_errors_reported_once():
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except Exception as e:
        raise Unreadable(f"checkpoint {where} is unreadable: {_read_failure(where, stored, e)}") from e
    restored = dict(restored.state)
    if "checksums" in position:  # VERSION-1 checkpoints were saved without
        _check_arrays(where, restored, position["checksums"])
    return position, restored


def load_latest_readable(manager: ocp.CheckpointManager, directory: Path, steps: list[int],
                          state) -> tuple[dict, dict]:
    """:func:`load` of the latest of ``steps`` that reads back intact, warning about each damaged one passed
    over (``manager``, ``directory`` and ``state`` as there)."""
    skipped: list[str] = []
    for step in reversed(steps):
        try:
            loaded = load(manager, directory, step, state)
        except Unreadable as e:
            skipped.append(str(e))
            continue
        for reason in skipped:
            warnings.warn(f"{reason}; restored the previous good checkpoint, {directory / str(step)}, instead",
                          stacklevel=3)
        return loaded
    raise CheckpointError(f"no readable checkpoint in {directory}: " + "; ".join(skipped))

