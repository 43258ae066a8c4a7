"""Argument checks shared by every layer: a clear error, naming the value and what was expected, before
anything runs. No jaxlearn imports, so the optimizers, the core and the callbacks can all use them."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def check_positive(name: str, value: Any, allow_zero: bool = False) -> None:
    """``value`` (a learning rate or other scale, or an array of them), called ``name`` in the error, must be
    finite and positive (or zero, with ``allow_zero``): a ``ValueError`` before training otherwise."""
    v = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(v)) or np.any(v < 0) or (not allow_zero and np.any(v == 0)):
        raise ValueError(f"{name} must be a finite {'non-negative' if allow_zero else 'positive'} number, "
                         f"got {value!r}")


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    """``value`` (a count: epochs, batches, steps per call), called ``name`` in the error, must be a positive
    integer (or ``None``, with ``allow_none``): a ``ValueError`` otherwise."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


MAX_SEED = 2 ** 32 - 1  # jax.random.key takes 32 bits: 2**32 would be seed 0 again, -1 would be 2**32 - 1


def check_seed(value: Any, name: str = "seed") -> None:
    """``value``, called ``name`` in the error, must be a seed: an integer (NumPy's too) in 0..2**32-1. Outside,
    ``jax.random.key`` would wrap it onto another seed's stream (2**32 is seed 0), so two different seeds would
    silently be one run."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if not 0 <= int(value) <= MAX_SEED:
        raise ValueError(f"{name} must be in 0..{MAX_SEED} (2**32 - 1), got {value}: a seed outside would wrap onto "
                         f"another one's random stream")


def describe(x: Any) -> str:
    """Per-example shape and dtype of the input array ``x`` (or of each array of a pytree), for error messages."""
    one = lambda a: f"shape {tuple(a.shape[1:])}, dtype {a.dtype}"  # noqa: E731
    return one(x) if isinstance(x, (jax.Array, np.ndarray)) else str(jax.tree.map(one, x))
