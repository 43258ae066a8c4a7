"""Dynamic loss scaling for float16 training, as an optax transform around the optimizer (fastai's
``MixedPrecision`` with PyTorch's ``GradScaler`` defaults; Micikevicius et al. 2018).

The train step multiplies the loss by the current scale (:func:`loss_scale`) before differentiating; the
transform divides the gradients by it and skips the update when they are not finite.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any


class LossScaleState(NamedTuple):
    """The state of :func:`dynamic_loss_scale`: the current ``scale``, the finite steps since it last changed
    (``good_steps``) and the ``inner`` optimizer's state."""
    scale: jax.Array       # the loss is multiplied by this before differentiating
    good_steps: jax.Array  # finite steps since the scale last changed
    inner: optax.OptState


def dynamic_loss_scale(inner: optax.GradientTransformation, init_scale: float = 2.0 ** 15,
                       growth_interval: int = 2000, factor: float = 2.0) -> optax.GradientTransformation:
    """Dynamic loss scaling around ``inner`` for float16 training (fastai's ``MixedPrecision`` with PyTorch's
    ``GradScaler`` defaults): small float16 gradients underflow to 0 unless the loss is scaled up first.

    The train step multiplies the loss by ``scale`` (:func:`loss_scale`; it starts at ``init_scale``); ``update``
    divides the gradients by it. Non-finite gradients (the scale was too high) skip the update — ``inner``'s
    state is kept — and divide the scale by ``factor``; ``growth_interval`` finite steps in a row multiply it by
    ``factor``.
    """
    def init(params: PyTree) -> LossScaleState:
        return LossScaleState(jnp.asarray(init_scale, jnp.float32), jnp.zeros((), jnp.int32), inner.init(params))

    def update(grads: PyTree, state: LossScaleState, params: PyTree = None) -> tuple[PyTree, LossScaleState]:
        grads = jax.tree.map(lambda g: g / state.scale, grads)
        finite = jnp.all(jnp.array([jnp.isfinite(g).all() for g in jax.tree.leaves(grads)]))
        updates, new_inner = inner.update(grads, state.inner, params)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        updates = jax.tree.map(lambda u: jnp.where(finite, u, 0), updates)
        grow = finite & (state.good_steps + 1 >= growth_interval)
        scale = jnp.where(finite, jnp.where(grow, state.scale * factor, state.scale),
                          jnp.maximum(state.scale / factor, 1.0))
        good_steps = jnp.where(finite & ~grow, state.good_steps + 1, 0)
        return updates, LossScaleState(scale, good_steps, jax.tree.map(keep, new_inner, state.inner))

    return optax.GradientTransformation(init, update)


def loss_scale(opt_state: optax.OptState) -> jax.Array | float:
    """The current loss scale in ``opt_state`` when it is a :func:`dynamic_loss_scale` state; 1 for any other."""
    return opt_state.scale if isinstance(opt_state, LossScaleState) else 1.0


def mixed_precision(tx: optax.GradientTransformation, compute_dtype: Any) -> optax.GradientTransformation:
    """``tx`` for training in ``compute_dtype``: float16 needs dynamic loss scaling (its exponent range is
    narrow); bfloat16 has float32's range and needs none."""
    return dynamic_loss_scale(tx) if compute_dtype is not None and jnp.dtype(compute_dtype) == jnp.float16 else tx

