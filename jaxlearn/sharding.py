"""Data parallelism the XLA way: a :class:`jax.sharding.Mesh` with a ``'data'`` axis.

Params, optimizer and norm state are replicated; each gathered batch is sharded over ``'data'``; XLA inserts
the collectives, so gradients and BatchNorm statistics are over the whole global batch. Under
``jax.distributed.initialize`` (:func:`initialize_distributed`: the same, with a clear timeout) every process
holds the dataset and the jitted gather makes the globally sharded batch.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"  # the mesh axis the batch is sharded over
INIT_TIMEOUT_EXIT_STATUS = 1  # of a process whose partners did not meet within initialize_distributed's timeout
_JAX_TIMEOUT_MARGIN_S = 30  # jax's own initialization timeout, beyond ours: its expiry aborts with a C++ trace


def resolve_mesh(mesh: Mesh | bool | None) -> Mesh | None:
    """``None``: a 'data' mesh over all devices when there is more than one; ``True``: one even on a single
    device; ``False``: no mesh (one device); a :class:`Mesh`: it must have a 'data' axis."""
    if mesh is None or mesh is True:
        devices = jax.devices()
        return Mesh(np.array(devices), (DATA_AXIS,)) if len(devices) > 1 or mesh is True else None
    if mesh is False:
        return None
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, True, False or None, got {mesh!r}")
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(f"the mesh needs a '{DATA_AXIS}' axis to shard the batch over, it has {mesh.axis_names}")
    return mesh


def n_data_devices(mesh: Mesh | None) -> int:
    """Devices each batch is split over (1 without a mesh)."""
    return 1 if mesh is None else mesh.shape[DATA_AXIS]


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Put the host / single-device values of ``tree`` on every device of ``mesh`` (a global array under
    multi-process), or on the default device without a mesh — an explicit transfer, allowed under
    ``jax.transfer_guard``."""
    if mesh is None:  # host values only: device arrays stay as they are (placement and all)
        return jax.tree.map(lambda a: a if isinstance(a, jax.Array) else jax.device_put(a), tree)
    if jax.process_count() == 1:
        return jax.device_put(tree, NamedSharding(mesh, P()))
    return multihost_utils.host_local_array_to_global_array(tree, mesh, P())


def replicated(mesh: Mesh | None) -> dict:
    """``jax.jit`` keyword arguments that keep every output replicated over ``mesh`` (none without one), so the
    next call's inputs keep one sharding and nothing is retraced."""
    return {} if mesh is None else {"out_shardings": NamedSharding(mesh, P())}


def batch_constraint(mesh: Mesh | None) -> Callable[[Any], Any]:
    """Shard a gathered batch over the mesh's 'data' axis (identity without a mesh).

    A batch that does not split evenly (possible for the validation set, whose batch size need not be a
    multiple of the device count) is left replicated: every device evaluates all of it.
    """
    if mesh is None:
        return lambda t: t
    sharding, n = NamedSharding(mesh, P(DATA_AXIS)), n_data_devices(mesh)
    return lambda t: jax.tree.map(
        lambda a: jax.lax.with_sharding_constraint(a, sharding) if a.shape[0] % n == 0 else a, t)


def check_batch_divides(batch_size: int, mesh: Mesh | None) -> None:
    """``batch_size`` must divide evenly over the devices of ``mesh``'s 'data' axis: each device takes an equal
    slice of every training batch."""
    n = n_data_devices(mesh)
    if batch_size % n:
        raise ValueError(f"batch size {batch_size} is not divisible by the {n} devices of the mesh's "
                         f"'{DATA_AXIS}' axis (each device takes an equal slice of every batch): use a "
                         f"multiple of {n}, e.g. {-(-batch_size // n) * n}, or Learner(..., mesh=False) "
                         f"for one device")


def _check_distributed_args(coordinator: str, num_processes: int, process_id: int, timeout_s: float) -> None:
    host, _, port = str(coordinator).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator must be 'host:port' (process 0's address, e.g. '10.0.0.1:1234'), got "
                         f"{coordinator!r}")
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"num_processes must be a positive integer, got {num_processes!r}")
    if isinstance(process_id, bool) or not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in 0..{num_processes - 1} (num_processes {num_processes}), got "
                         f"{process_id!r}")
    if not timeout_s > 0 or not math.isfinite(timeout_s):
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")


def _timed_out_message(coordinator: str, num_processes: int, process_id: int, timeout_s: float) -> str:
    if process_id == 0:
        others = ("the other process has not" if num_processes == 2 else
                  f"not all the other {num_processes - 1} processes have")
        waited = f"process 0 of {num_processes} started the coordinator at {coordinator}, but {others} connected to it"
    else:
        waited = (f"process {process_id} of {num_processes} could not join the coordinator at {coordinator} (process "
                  f"0's address): process 0 is not running there, or that address is not reachable from here")
    return (f"jax.distributed did not start within {timeout_s:g} s: {waited}. Start all {num_processes} processes "
            f"with the same coordinator address and number of processes (each its own process id), or allow more "
            f"time (timeout_s) if some start late.")


def initialize_distributed(coordinator: str, num_processes: int, process_id: int, timeout_s: float = 60.0,
                           **kwargs: Any) -> None:
    """``jax.distributed.initialize`` for process ``process_id`` of ``num_processes`` (process 0 runs the
    coordinator at ``coordinator``, ``'host:port'``), ending in a clear error when the processes have not all
    met within ``timeout_s`` seconds.

    Left to itself, jax waits out its ``initialization_timeout`` (300 s by default) and then aborts the process
    with a C++ stack trace that names neither the address nor the cause. Here a watchdog thread ends the
    process after ``timeout_s`` instead, with exit status :data:`INIT_TIMEOUT_EXIT_STATUS` and one message on
    stderr naming the coordinator address, this process, and what to check. It cannot be an exception: jax's
    wait is C++ that holds the calling thread until it returns or aborts. jax's own timeout is set beyond
    ``timeout_s``. Bad arguments raise ValueError at once; ``kwargs`` go to ``jax.distributed.initialize``
    (``local_device_ids``, ``heartbeat_timeout_seconds``, ...).
    """
    _check_distributed_args(coordinator, num_processes, process_id, timeout_s)

    def give_up() -> None:
        sys.stdout.flush()
        sys.stderr.write(_timed_out_message(coordinator, num_processes, process_id, timeout_s) + "\n")
        sys.stderr.flush()
        os._exit(INIT_TIMEOUT_EXIT_STATUS)  # the main thread is inside jax's C++ wait: only the process can end

    watchdog = threading.Timer(timeout_s, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id,
                                   initialization_timeout=math.ceil(timeout_s) + _JAX_TIMEOUT_MARGIN_S, **kwargs)
    finally:
        watchdog.cancel()
