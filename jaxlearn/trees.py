"""Pytree helpers the core and the callbacks share: names of paths, device copies, finiteness, and the zeros
that :meth:`flax.linen.Module.perturb` differentiates through."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any
PERTURBATIONS = "perturbations"  # flax's collection of ``self.perturb``-ed values


def path_name(path: tuple) -> str:
    """``'Conv_0/kernel'`` from a pytree key path (dict keys, attributes, sequence indices)."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def named_leaves(tree: PyTree) -> dict[str, Any]:
    """``{'Conv_0/kernel': leaf, ...}``: every leaf of ``tree`` keyed by its :func:`path_name`."""
    return {path_name(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def flatten_intermediates(intermediates: Mapping[str, Any]) -> dict[str, jax.Array]:
    """``{'Conv_0/GeneralRelu_0': activation, ...}`` from flax's nested ``intermediates`` collection.

    flax stores each captured output as a tuple under ``'__call__'``; the top module's own output (path '')
    is skipped since it is the model's prediction, not a layer.
    """
    flat = {}
    for path, value in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
        keys = [k.key for k in path if hasattr(k, "key")]
        if keys and keys[-1] == "__call__":
            keys = keys[:-1]
        if keys:
            flat["/".join(keys)] = value
    return flat


def copy_state(tree: PyTree) -> PyTree:
    """A device-side copy of ``tree``'s arrays: the compiled train call donates (reuses) its input state's
    buffers, so a state kept for later (the last good one, the best one) must be a copy."""
    return jax.tree.map(lambda a: a.copy() if isinstance(a, jax.Array) else a, tree)


def distinct_buffers(tree: PyTree) -> PyTree:
    """``tree`` with every array that appears in more than one leaf copied, so that each leaf owns its buffer
    (the same scalar set as two groups' learning rate, say): XLA cannot donate one buffer twice. A tree without
    such sharing comes back as it is."""
    ids = [id(a) for a in jax.tree.leaves(tree) if isinstance(a, jax.Array)]
    if len(set(ids)) == len(ids):
        return tree
    seen: set[int] = set()

    def own(a):
        if not isinstance(a, jax.Array):
            return a
        if id(a) in seen:
            return a.copy()
        seen.add(id(a))
        return a
    return jax.tree.map(own, tree)


def tree_all_finite(tree: PyTree) -> jax.Array:
    """True when every element of every float leaf of ``tree`` is finite (no NaN, no ±Inf)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def zero_perturbations(apply: Callable[..., tuple[Any, Mapping]], *args: Any, **kwargs: Any) -> PyTree:
    """Zeros shaped like the ``perturbations`` collection that ``apply(*args, **kwargs)`` makes (``kwargs``
    must make it mutable). Added to the perturbed values, their gradient is ∂L/∂(that value): how the core's
    step, makemore's diagnostics and the RNNs' ∂L/∂h_t measure the gradient of a layer's output. Shapes only:
    nothing is computed."""
    shapes = jax.eval_shape(lambda: apply(*args, **kwargs)[1].get(PERTURBATIONS, {}))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
