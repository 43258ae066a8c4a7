"""Argument checks shared by every layer: a clear error, naming the value and what was expected, before
anything runs. No jaxlearn imports, so the optimizers, the core and the callbacks can all use them."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def check_positive(name: str, value: Any, allow_zero: bool = False) -> None:
    """A learning rate (or other scale) must be finite and positive: a clear error before training."""
    v = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(v)) or np.any(v < 0) or (not allow_zero and np.any(v == 0)):
        raise ValueError(f"{name} must be a finite {'non-negative' if allow_zero else 'positive'} number, "
                         f"got {value!r}")


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    """A count (epochs, batches, steps per call) must be a positive integer (``None`` where allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_seed(value: Any, name: str = "seed") -> None:
    """A seed is an integer (NumPy's too)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")


def describe(x: Any) -> str:
    """Per-example shape and dtype of an input array (or of each array of a pytree), for error messages."""
    one = lambda a: f"shape {tuple(a.shape[1:])}, dtype {a.dtype}"  # noqa: E731
    return one(x) if isinstance(x, (jax.Array, np.ndarray)) else str(jax.tree.map(one, x))
