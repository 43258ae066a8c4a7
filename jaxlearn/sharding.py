"""Data parallelism the XLA way: a :class:`jax.sharding.Mesh` with a ``'data'`` axis.

Params, optimizer and norm state are replicated; each gathered batch is sharded over ``'data'``; XLA inserts
the collectives, so gradients and BatchNorm statistics are over the whole global batch. Under
``jax.distributed.initialize`` every process holds the dataset and the jitted gather makes the globally
sharded batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"  # the mesh axis the batch is sharded over


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
    """Put host / single-device values on every device of ``mesh`` (a global array under multi-process), or
    on the default device without a mesh — an explicit transfer, allowed under ``jax.transfer_guard``."""
    if mesh is None:  # host values only: device arrays stay as they are (placement and all)
        return jax.tree.map(lambda a: a if isinstance(a, jax.Array) else jax.device_put(a), tree)
    if jax.process_count() == 1:
        return jax.device_put(tree, NamedSharding(mesh, P()))
    return multihost_utils.host_local_array_to_global_array(tree, mesh, P())


def replicated(mesh: Mesh | None) -> dict:
    """``jax.jit`` keyword arguments that keep every output replicated, so the next call's inputs keep one
    sharding and nothing is retraced."""
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
    """Each device takes an equal slice of every training batch."""
    n = n_data_devices(mesh)
    if batch_size % n:
        raise ValueError(f"batch size {batch_size} is not divisible by the {n} devices of the mesh's "
                         f"'{DATA_AXIS}' axis (each device takes an equal slice of every batch): use a "
                         f"multiple of {n}, e.g. {-(-batch_size // n) * n}, or Learner(..., mesh=False) "
                         f"for one device")
