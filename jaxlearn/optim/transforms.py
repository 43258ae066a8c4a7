r"""The optimizers' building blocks as optax gradient transformations (optax's ``transform.py``).

Direction transforms — momentum (miniai's lerp or the heavy ball, Nesterov), RMSProp, Adam with bias
correction — then L2 and decoupled weight decay, clipping and the final ``-lr`` scaling. Each is a small
``GradientTransformation(init, update)`` with its state a NamedTuple; :mod:`jaxlearn.optim.alias` chains them
into the lessons' optimizers. How they differ from optax's own: see :mod:`jaxlearn.optim`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

Numeric = jax.typing.ArrayLike


# ----------------------------------------------------------------------------
# Direction transforms
# ----------------------------------------------------------------------------


class ScaleByMomentumState(NamedTuple):
    """``momentum``: the running average (lerp) or running sum (heavy ball) of the gradients."""

    momentum: optax.Updates


def scale_by_momentum(
    beta: Numeric = 0.9, lerp: bool = True, nesterov: bool = False
) -> optax.GradientTransformation:
    r"""Replace the gradient by its momentum.

    * ``lerp=True`` (miniai ``Momentum.opt_step``): ``m <- beta*m + (1-beta)*g``,
      an exponential moving average with the scale of ``g``.
    * ``lerp=False`` (DLVU, ``torch.optim.SGD``, ``optax.trace``):
      ``m <- beta*m + g``, the heavy ball; in steady state ``m = g/(1-beta)``, the
      ``1/(1-beta)`` acceleration of the DLVU lecture.

    ``m`` starts at zero (miniai ``zeros_like``). With ``nesterov=True`` the
    direction is the look-ahead ``beta*m_new + c*g`` (``c = 1-beta`` or ``1``),
    which for ``lerp=False`` is PyTorch's and ``optax.sgd(nesterov=True)``'s
    ``g + beta*m_new``.
    """
    def init_fn(params: optax.Params) -> ScaleByMomentumState:
        return ScaleByMomentumState(momentum=jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        # The only difference between the two flavours is how much of g enters.
        g_weight = 1 - beta if lerp else 1
        momentum = jax.tree.map(
            lambda m, g: beta * m + g_weight * g, state.momentum, updates)
        if nesterov:
            updates = jax.tree.map(
                lambda m, g: beta * m + g_weight * g, momentum, updates)
        else:
            updates = momentum
        return updates, ScaleByMomentumState(momentum=momentum)

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByRmsState(NamedTuple):
    """Step ``count`` (0 means "seed with the first g**2") and the mean square ``sqr_avg``."""

    count: jax.Array
    sqr_avg: optax.Updates


def scale_by_rms(
    decay: Numeric = 0.99, eps: Numeric = 1e-5, init_with_first_grad: bool = True
) -> optax.GradientTransformation:
    r"""miniai RMSProp direction ``g / (sqrt(s) + eps)``.

    ``s <- decay*s + (1-decay)*g**2``; ``eps`` sits *outside* the sqrt. With
    ``init_with_first_grad`` (miniai ``p.sqr_avg = p.grad**2``) ``s`` is seeded
    with the first ``g**2`` so the first step is ``~sign(g)`` instead of the
    ``1/sqrt(1-decay)`` times larger step of a zero start; otherwise ``s``
    starts at 0 (= ``optax.scale_by_rms(initial_scale=0, eps_in_sqrt=False)``).
    """
    def init_fn(params: optax.Params) -> ScaleByRmsState:
        # The seed needs the first gradient, which init does not see: keep a
        # step count and seed inside the first update instead.
        return ScaleByRmsState(
            count=jnp.zeros([], jnp.int32),
            sqr_avg=jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        first_step = state.count == 0

        def new_sqr_avg(s, g):
            if init_with_first_grad:
                s = jnp.where(first_step, g * g, s)
            return decay * s + (1 - decay) * g * g

        sqr_avg = jax.tree.map(new_sqr_avg, state.sqr_avg, updates)
        updates = jax.tree.map(
            lambda g, s: g / (jnp.sqrt(s) + eps), updates, sqr_avg)
        return updates, ScaleByRmsState(
            count=optax.safe_increment(state.count), sqr_avg=sqr_avg)

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByAdamState(NamedTuple):
    """Step ``count`` and the two moment averages of Adam: ``mu`` of the gradients, ``nu`` of their squares."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def scale_by_adam(
    b1: Numeric = 0.9,
    b2: Numeric = 0.99,
    eps: Numeric = 1e-5,
    eps_in_sqrt: bool = True,
) -> optax.GradientTransformation:
    r"""Adam direction with bias correction (miniai ``Adam``, DLVU).

    ``m <- b1*m + (1-b1)*g``, ``v <- b2*v + (1-b2)*g**2``, both from 0;
    ``m_hat = m/(1-b1**t)``, ``v_hat = v/(1-b2**t)`` with ``t = 1, 2, ...``
    (the debiasing undoes the zero start). Direction
    ``m_hat / sqrt(v_hat + eps)`` (miniai course code, ``eps_in_sqrt=True``) or
    ``m_hat / (sqrt(v_hat) + eps)`` (paper, optax, PyTorch).
    """
    def init_fn(params: optax.Params) -> ScaleByAdamState:
        zeros = jax.tree.map(jnp.zeros_like, params)
        return ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros, nu=zeros)

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, updates)
        mu_correction = 1 - b1 ** count
        nu_correction = 1 - b2 ** count

        def direction(m, v):
            m_hat, v_hat = m / mu_correction, v / nu_correction
            if eps_in_sqrt:
                return m_hat / jnp.sqrt(v_hat + eps)
            return m_hat / (jnp.sqrt(v_hat) + eps)

        updates = jax.tree.map(direction, mu, nu)
        return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------
# Regularisation, clipping, learning rate
# ----------------------------------------------------------------------------


def _add_scaled_params(weight: Numeric) -> optax.GradientTransformation:
    """``u <- u + weight * p``: the arithmetic shared by L2 and weight decay. A plain 0 is the identity: XLA
    keeps ``u + 0 * p`` (0 · inf is nan), and in a tiny model's step every elementwise op counts."""
    if isinstance(weight, (int, float)) and weight == 0:
        return optax.identity()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(optax.NO_PARAMS_MSG)
        return jax.tree.map(lambda u, p: u + weight * p, updates, params), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def add_l2(weight_decay: Numeric) -> optax.GradientTransformation:
    r"""Coupled L2 regularisation: ``g <- g + wd * p`` (``wd``: ``weight_decay``).

    This is the gradient of ``loss + wd/2 * |p|**2``; put it FIRST in a chain so
    that the penalty's gradient goes through momentum / the adaptive scaling
    like any other gradient. For plain SGD that is identical to
    :func:`decay_weights`; for Adam it is not, because Adam divides the penalty
    by ``sqrt(v)`` (DLVU "weight decay = L2 only for SGD"; fast.ai 2018
    lesson 5; Loshchilov & Hutter's AdamW).
    """
    return _add_scaled_params(weight_decay)


def decay_weights(weight_decay: Numeric) -> optax.GradientTransformation:
    r"""Decoupled weight decay: ``p <- p * (1 - lr * wd)`` (miniai ``SGD.reg_step``; ``wd``: ``weight_decay``).

    Design choice: this transform does not take the learning rate. It adds
    ``wd * p`` to the *direction* (after momentum / rms / adam, so the decay
    bypasses the adaptive scaling) and must sit directly before
    :func:`scale_by_lr`, which turns it into ``-lr * wd * p``. That keeps the lr
    (float, schedule or injected hyperparameter) in a single place, and makes a
    zero lr (a frozen group) freeze the decay too. Same layout as
    ``optax.adamw = chain(scale_by_adam, add_decayed_weights(wd), scale(-lr))``.
    """
    return _add_scaled_params(weight_decay)


def clip_elementwise(max_delta: Numeric) -> optax.GradientTransformation:
    """Clip every gradient entry to ``[-max_delta, max_delta]`` (DLVU)."""
    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: jnp.clip(g, -max_delta, max_delta), updates), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def clip_global_norm(max_norm: Numeric) -> optax.GradientTransformation:
    r"""Rescale all gradients together so that ``|g|_2 <= max_norm`` (DLVU).

    ``g <- g * max_norm / |g|`` when ``|g| > max_norm``; unlike element-wise
    clipping this keeps the gradient's direction. Same as
    ``optax.clip_by_global_norm``.
    """
    def update_fn(updates, state, params=None):
        del params
        norm = optax.global_norm(updates)
        # where, not a Python if: the norm is a traced value.
        updates = jax.tree.map(
            lambda g: jnp.where(norm < max_norm, g, g / norm * max_norm), updates)
        return updates, state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


class ScaleByLrState(NamedTuple):
    """``count``: the number of steps taken, the argument of the lr schedule."""

    count: jax.Array


def scale_by_lr(learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
    r"""Final step of every chain: ``u <- -lr * u``.

    The minus sign makes the result an *update* for ``optax.apply_updates``
    (``p + u``). ``learning_rate`` is a number (possibly a traced array injected
    by ``optax.inject_hyperparams``) or a schedule ``step -> lr`` evaluated at
    the number of steps already taken (0 for the first step).
    """
    if callable(learning_rate):
        def init_fn(params: optax.Params) -> ScaleByLrState:
            del params
            return ScaleByLrState(count=jnp.zeros([], jnp.int32))

        def update_fn(updates, state, params=None):
            del params
            lr = learning_rate(state.count)
            updates = jax.tree.map(lambda u: (-lr * u).astype(u.dtype), updates)
            return updates, ScaleByLrState(count=optax.safe_increment(state.count))

        return optax.GradientTransformation(init_fn, update_fn)

    def const_update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda u: (-learning_rate * u).astype(u.dtype), updates), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), const_update_fn)
