r"""Optimizers as optax gradient transformations.

Sources: fast.ai 2022 lesson 17 ("miniai" ``SGD``/``Momentum``/``RMSProp``/``Adam``
classes), DLVU "Tools of the trade" (heavy-ball momentum, Nesterov, Adam, L2 vs
weight decay, clipping) and fast.ai 2018 (AdamW, differential learning rates,
freezing layer groups).

Every building block is a small ``optax.GradientTransformation``; the aliases
(:func:`sgd`, :func:`momentum`, :func:`rmsprop`, :func:`adam`, :func:`adamw`)
chain them in one fixed order::

    direction (momentum / rms / adam)  ->  decay_weights(wd)  ->  scale_by_lr(lr)

so the final update is ``-lr * (direction + wd * p)`` and ``optax.apply_updates``
gives ``p <- p * (1 - lr*wd) - lr * direction``: exactly miniai's
``reg_step`` (``p *= 1 - lr*wd``) followed by ``opt_step`` (``p -= lr*step``).
Keeping the learning rate in ONE transform at the very end has two consequences
the rest of the package relies on:

* the lr can be a float, an optax schedule, or an injected hyperparameter
  (``optax.inject_hyperparams(adam)(learning_rate=...)``; the Learner changes it
  with ``optax.tree_utils.tree_set(opt_state, learning_rate=x)``, or with
  :func:`set_hyperparams`, which also keeps the stored float32 dtype so that a
  Python float does not cost an extra jit trace) without any other transform
  needing to know;
* ``lr == 0`` makes the whole update ``-0 * (...)``, so the parameters stay
  bitwise unchanged. :func:`differential` freezes layer groups that way, by
  editing the optimizer *state* only (no recompilation).

All aliases keep every hyperparameter a plain numeric keyword (flags are
``bool``, which ``inject_hyperparams`` treats as static), so each of them can be
wrapped by ``optax.inject_hyperparams``.  Because injected hyperparameters are
traced arrays, no transform branches in Python on a numeric value (e.g.
``weight_decay=0.`` still adds ``0 * p``, which is exact).

Where miniai differs from optax
-------------------------------
* RMSProp: miniai seeds the square average with the first ``g**2`` (``p.sqr_avg
  = p.grad**2``), optax with a constant ``initial_scale`` (0 by default, which
  makes the first step ``g / sqrt((1-decay) g**2)`` = 10x the gradient's sign
  for decay 0.99 -- the "huge first step" pitfall). The two agree exactly when
  optax's square average is set to ``g1**2`` after ``init`` (or, for a scalar
  problem, ``initial_scale=g1**2``). miniai also puts ``eps`` outside the sqrt
  (``g / (sqrt(s) + eps)``), optax inside by default: use
  ``optax.rmsprop(eps_in_sqrt=False)``. Defaults: miniai ``decay=0.99,
  eps=1e-5``; optax ``0.9, 1e-8``.
* Adam: miniai's defaults are ``b2=0.99, eps=1e-5``; optax (and the paper /
  PyTorch) use ``b2=0.999, eps=1e-8``. The lesson's course code puts ``eps``
  inside the sqrt (``m_hat / sqrt(v_hat + eps)``, our default
  ``eps_in_sqrt=True`` = ``optax.adam(eps=0, eps_root=eps)``); with
  ``eps_in_sqrt=False`` it is optax's ``m_hat / (sqrt(v_hat) + eps)``.
* Momentum: miniai lerps (``avg = b*avg + (1-b)*g``); optax.sgd / torch use the
  heavy-ball sum (``m = b*m + g``), i.e. the same trajectory with the lr scaled
  by ``1/(1-b)``. Both are available (``lerp=``).
* Weight decay: every alias here decays *decoupled* (miniai ``SGD.reg_step``,
  AdamW), so ``adam(weight_decay=wd)`` is ``optax.adamw``, not Adam + L2. For
  L2 put :func:`add_l2` in front of the chain.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

Numeric = jax.typing.ArrayLike


# ----------------------------------------------------------------------------
# Direction transforms
# ----------------------------------------------------------------------------


class ScaleByMomentumState(NamedTuple):
    """Running average (lerp) or running sum (heavy ball) of the gradients."""

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
    """Step count (0 means "seed with the first g**2") and the mean square."""

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
    """Step count and the two moment averages of Adam."""

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
    r"""Coupled L2 regularisation: ``g <- g + wd * p``.

    This is the gradient of ``loss + wd/2 * |p|**2``; put it FIRST in a chain so
    that the penalty's gradient goes through momentum / the adaptive scaling
    like any other gradient. For plain SGD that is identical to
    :func:`decay_weights`; for Adam it is not, because Adam divides the penalty
    by ``sqrt(v)`` (DLVU "weight decay = L2 only for SGD"; fast.ai 2018
    lesson 5; Loshchilov & Hutter's AdamW).
    """
    return _add_scaled_params(weight_decay)


def decay_weights(weight_decay: Numeric) -> optax.GradientTransformation:
    r"""Decoupled weight decay: ``p <- p * (1 - lr * wd)`` (miniai ``SGD.reg_step``).

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
    """Number of steps taken, the argument of the lr schedule."""

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


# ----------------------------------------------------------------------------
# Aliases (all wrappable by optax.inject_hyperparams)
# ----------------------------------------------------------------------------


def sgd(learning_rate: optax.ScalarOrSchedule, weight_decay: Numeric = 0.0) -> optax.GradientTransformation:
    r"""miniai ``SGD``: ``p <- p*(1 - lr*wd) - lr*g``."""
    return optax.chain(decay_weights(weight_decay), scale_by_lr(learning_rate))


def momentum(
    learning_rate: optax.ScalarOrSchedule,
    beta: Numeric = 0.9,
    weight_decay: Numeric = 0.0,
    lerp: bool = True,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    r"""miniai ``Momentum`` (``lerp=True``) or heavy-ball / Nesterov SGD.

    ``p <- p*(1 - lr*wd) - lr*m`` with ``m`` from :func:`scale_by_momentum`.
    ``momentum(lr, b, lerp=False, nesterov=n)`` is ``optax.sgd(lr, b, n)``;
    ``momentum(lr, b)`` is ``optax.sgd(lr*(1-b), b)``.
    """
    return optax.chain(
        scale_by_momentum(beta, lerp=lerp, nesterov=nesterov),
        decay_weights(weight_decay),
        scale_by_lr(learning_rate),
    )


def rmsprop(
    learning_rate: optax.ScalarOrSchedule,
    decay: Numeric = 0.99,
    eps: Numeric = 1e-5,
    weight_decay: Numeric = 0.0,
    init_with_first_grad: bool = True,
) -> optax.GradientTransformation:
    r"""miniai ``RMSProp``: ``p <- p*(1 - lr*wd) - lr * g/(sqrt(s) + eps)``."""
    return optax.chain(
        scale_by_rms(decay, eps, init_with_first_grad=init_with_first_grad),
        decay_weights(weight_decay),
        scale_by_lr(learning_rate),
    )


def adam(
    learning_rate: optax.ScalarOrSchedule,
    b1: Numeric = 0.9,
    b2: Numeric = 0.99,
    eps: Numeric = 1e-5,
    weight_decay: Numeric = 0.0,
    eps_in_sqrt: bool = True,
) -> optax.GradientTransformation:
    r"""miniai ``Adam`` with decoupled weight decay (i.e. AdamW when ``wd > 0``).

    ``p <- p*(1 - lr*wd) - lr * m_hat/sqrt(v_hat + eps)``; see
    :func:`scale_by_adam`. Matches ``optax.adamw(lr, b1, b2, eps=0,
    eps_root=eps, weight_decay=wd)`` (or ``optax.adamw(lr, b1, b2, eps)`` with
    ``eps_in_sqrt=False``).
    """
    return optax.chain(
        scale_by_adam(b1, b2, eps, eps_in_sqrt=eps_in_sqrt),
        decay_weights(weight_decay),
        scale_by_lr(learning_rate),
    )


def adamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: Numeric = 0.9,
    b2: Numeric = 0.99,
    eps: Numeric = 1e-5,
    weight_decay: Numeric = 1e-2,
    eps_in_sqrt: bool = True,
) -> optax.GradientTransformation:
    r""":func:`adam` with fastai's default decoupled weight decay ``wd=0.01``."""
    return adam(learning_rate, b1, b2, eps, weight_decay, eps_in_sqrt=eps_in_sqrt)


# ----------------------------------------------------------------------------
# Differential learning rates and freezing (fast.ai 2018)
# ----------------------------------------------------------------------------


def param_groups(
    params: Mapping[str, Any], groups: int | Callable[[str], int]
) -> dict[str, Any]:
    """Label every parameter with the index of its layer group.

    The groups are made of top-level entries of ``params`` (layers, e.g.
    ``Dense_0``) in their insertion order, which for flax is the order the
    submodules were created, i.e. input to output. ``groups`` is either the
    number of contiguous groups (earlier groups get the extra layers when the
    split is uneven; the last group is the head) or a function
    ``layer_name -> group index``. Returns a labels pytree (int leaves, same
    structure as ``params``) for :func:`differential` / ``optax.multi_transform``.
    """
    names = list(params)
    if callable(groups):
        group_of = {name: int(groups(name)) for name in names}
    else:
        if not 1 <= groups <= len(names):
            raise ValueError(f"need 1 <= groups <= {len(names)} layers, got {groups}")
        chunks = np.array_split(np.arange(len(names)), groups)
        group_of = {names[j]: i for i, chunk in enumerate(chunks) for j in chunk}
    return {name: jax.tree.map(lambda _: group_of[name], params[name]) for name in names}


def lr_range(lr: float, n_groups: int, factor: float = 3.0) -> tuple[float, ...]:
    """Per-group lrs growing by ``factor`` up to ``lr`` for the last group.

    fast.ai 2018: ``lr_range(lr, 3) == (lr/9, lr/3, lr)`` -- early layers
    (generic features) move less than the head.
    """
    return tuple(lr / factor ** (n_groups - 1 - i) for i in range(n_groups))


def _with_group_hyperparams(inner_factory: Callable[..., optax.GradientTransformation]):
    """``inner_factory`` plus two numeric keywords scaling its learning rate.

    The per-group lr is ``learning_rate * lr_mult * trainable``: ``learning_rate``
    stays shared by all groups so that the Learner's
    ``tree_set(opt_state, learning_rate=x)`` (a schedule) keeps the groups'
    ratios, ``lr_mult`` holds the ratio and ``trainable`` (1 or 0) the freezing,
    so unfreezing restores the differential lr without remembering it elsewhere.
    """
    signature = inspect.signature(inner_factory)
    if "learning_rate" not in signature.parameters:
        raise TypeError(f"{inner_factory} has no learning_rate argument")

    def factory(*, lr_mult: Numeric = 1.0, trainable: Numeric = 1.0, **kwargs: Any):
        kwargs["learning_rate"] = kwargs["learning_rate"] * lr_mult * trainable
        return inner_factory(**kwargs)

    # inject_hyperparams reads the signature to find the hyperparameters; give it
    # the inner one so all of the inner optimizer's numbers get injected too.
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=1.0)
        for name in ("lr_mult", "trainable")
    ]
    factory.__signature__ = signature.replace(
        parameters=[*signature.parameters.values(), *extra])
    return factory


def differential(
    inner_factory: Callable[..., optax.GradientTransformation],
    lrs: Sequence[float],
    labels: Any,
    **inner_kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
    r"""One injected ``inner_factory`` optimizer per layer group (fast.ai 2018).

    Group ``i`` (labels from :func:`param_groups`) trains with
    ``learning_rate * lr_mult_i * trainable_i``, where the shared
    ``learning_rate`` hyperparameter starts at ``max(lrs)``, ``lr_mult_i =
    lrs[i] / max(lrs)`` and ``trainable_i = 1``. All three (and every numeric
    ``inner_kwargs``) are injected hyperparameters living in the optimizer
    state, so :func:`freeze_to` / :func:`freeze` / :func:`unfreeze` and the
    Learner's ``tree_set(opt_state, learning_rate=x)`` are pure functions of the
    state and never trigger a recompilation. ``inner_factory`` must end with the
    lr scaling (all aliases here do), so that ``trainable = 0`` leaves the group's
    params exactly unchanged. A frozen group's momentum / Adam moments keep
    following its gradients (JAX still computes them), so it resumes with
    up-to-date statistics when unfrozen.
    """
    base_lr = max(lrs)
    if base_lr <= 0:
        raise ValueError(f"need a positive lr, got {lrs}")
    factory = optax.inject_hyperparams(_with_group_hyperparams(inner_factory))
    transforms = {
        i: factory(learning_rate=base_lr, lr_mult=lr / base_lr, trainable=1.0, **inner_kwargs)
        for i, lr in enumerate(lrs)
    }
    return optax.multi_transform(transforms, labels)


def set_hyperparams(opt_state: optax.OptState, **values: Numeric) -> optax.OptState:
    """Set injected hyperparameters (every group's, if several) by name.

    Like ``optax.tree_utils.tree_set(opt_state, learning_rate=x)`` but casts
    ``x`` to the dtype of the leaf it replaces. ``inject_hyperparams`` stores
    strongly typed float32 arrays while a Python float is weakly typed, and jit
    traces once per input type: mixing the two costs one extra compilation.
    """
    found = set()

    def visit(path, leaf):
        name = _key_name(path[-1])
        if len(path) < 2 or _key_name(path[-2]) != "hyperparams" or name not in values:
            return leaf
        found.add(name)
        return jnp.asarray(values[name], leaf.dtype)

    opt_state = jax.tree_util.tree_map_with_path(visit, opt_state)
    if missing := set(values) - found:
        raise KeyError(f"no injected hyperparameter named {sorted(missing)}")
    return opt_state


def _key_name(key: Any) -> Hashable:
    return key.name if isinstance(key, jax.tree_util.GetAttrKey) else getattr(key, "key", None)


def _group_of(path: tuple[Any, ...]) -> Hashable | None:
    """Group label of a leaf: the key under the innermost ``multi_transform``."""
    for parent, child in reversed(list(zip(path, path[1:]))):
        if _key_name(parent) == "inner_states" and isinstance(child, jax.tree_util.DictKey):
            return child.key
    return None


def freeze_to(opt_state: optax.OptState, n: int) -> optax.OptState:
    """Freeze groups ``< n`` and unfreeze the others (``n < 0`` counts from the end).

    Sets the ``trainable`` hyperparameter of each :func:`differential` group to
    0 or 1, keeping the leaf's dtype so a jitted step sees identical input
    types and is not retraced.
    """
    leaves = jax.tree_util.tree_flatten_with_path(opt_state)[0]
    groups = {_group_of(path) for path, _ in leaves if _key_name(path[-1]) == "trainable"}
    n_groups = len(groups - {None})
    if not n_groups:
        raise ValueError("opt_state has no layer groups: build it with differential()")
    if n < 0:
        n += n_groups

    def visit(path, leaf):
        group = _group_of(path)
        if _key_name(path[-1]) != "trainable" or group is None:
            return leaf
        # differential() labels the groups 0, 1, ... in order.
        return jnp.asarray(float(group >= n), leaf.dtype)

    return jax.tree_util.tree_map_with_path(visit, opt_state)


def freeze(opt_state: optax.OptState) -> optax.OptState:
    """Train only the last group (the head), as fastai's ``learn.freeze()``."""
    return freeze_to(opt_state, -1)


def unfreeze(opt_state: optax.OptState) -> optax.OptState:
    """Train every group."""
    return freeze_to(opt_state, 0)


# ----------------------------------------------------------------------------
# Layer groups, and what the Learner needs of an optimizer
# ----------------------------------------------------------------------------


def layer_groups(
    inner_factory: Callable[..., optax.GradientTransformation],
    lrs: Sequence[float],
    groups: int | Callable[[str], int] | None = None,
    **inner_kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
    """:func:`differential` for a Learner, which creates the params itself.

    The labels are computed from the params when the optimizer is initialised
    (``param_groups(params, groups)``, ``groups`` defaulting to ``len(lrs)``
    contiguous groups), so ``Learner(model, dls, optimizer=layer_groups(adam,
    lr_range(1e-2, 3)))`` needs no params up front. The Learner's
    ``set_hyper('learning_rate', x)`` (``fit(lr=x)``, ``ParamSchedulerCB``) sets the
    shared lr and keeps the groups' ratios.
    """
    groups = len(lrs) if groups is None else groups
    return differential(inner_factory, lrs, lambda params: param_groups(params, groups), **inner_kwargs)


def get_hyperparam(opt_state: optax.OptState, name: str) -> float:
    """The value of an injected hyperparameter (the first group's, if several), read to the host."""
    try:
        leaves = optax.tree_utils.tree_get_all_with_path(opt_state, name)
    except KeyError:
        leaves = []
    if not leaves:
        raise KeyError(f"the optimizer has no injectable hyperparameter {name!r}: pass a factory such as "
                       f"optax.sgd, or wrap it with optax.inject_hyperparams")
    return float(np.asarray(leaves[0][1]).reshape(-1)[0])


def hyperparam_names(opt_state: optax.OptState) -> set[str]:
    """The names of the injected hyperparameters in ``opt_state`` (those ``set_hyperparams`` can set)."""
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(opt_state)[0]]
    return {_key_name(p[-1]) for p in paths if len(p) >= 2 and _key_name(p[-2]) == "hyperparams"}


def check_positive(name: str, value: Any, allow_zero: bool = False) -> None:
    """A learning rate (or other scale) must be finite and positive: a clear error before training."""
    v = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(v)) or np.any(v < 0) or (not allow_zero and np.any(v == 0)):
        raise ValueError(f"{name} must be a finite {'non-negative' if allow_zero else 'positive'} number, "
                         f"got {value!r}")


DEFAULT_LR = 0.1


def make_optimizer(optimizer: optax.GradientTransformation | Callable[..., optax.GradientTransformation],
                   lr: float | None = None) -> optax.GradientTransformation:
    """A ready transformation from a transformation or a factory.

    A factory (``optax.sgd``, ``partial(optax.adamw, learning_rate=3e-4, b1=0.9)``) is wrapped with
    ``optax.inject_hyperparams`` so that its numeric settings can change between steps without recompiling;
    what the user bound is used as given, and ``lr`` (default 0.1) only fills a learning rate left unset —
    or replaces it when given explicitly. A schedule passed as ``learning_rate`` stays a schedule.
    """
    if lr is not None:
        check_positive("lr", lr)
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    if not callable(optimizer):
        raise TypeError(f"optimizer must be an optax GradientTransformation or a factory, got {optimizer!r}")
    args, kwargs = (), {}
    if isinstance(optimizer, functools.partial):
        optimizer, args, kwargs = optimizer.func, optimizer.args, dict(optimizer.keywords)
    if lr is not None or ("learning_rate" not in kwargs and not args):
        kwargs["learning_rate"] = DEFAULT_LR if lr is None else lr
    return optax.inject_hyperparams(optimizer)(*args, **kwargs)


def trainable_flags(opt_state: optax.OptState) -> dict[str, jax.Array]:
    """``{path: flag}`` of every group's ``trainable`` hyperparameter."""
    leaves = jax.tree_util.tree_flatten_with_path(opt_state)[0]
    return {jax.tree_util.keystr(path): leaf for path, leaf in leaves
            if _key_name(path[-1]) == "trainable" and _group_of(path) is not None}
