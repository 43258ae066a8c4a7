r"""Differential learning rates and freezing (fast.ai 2018): layer groups as an ``optax.multi_transform`` of
injected optimizers, frozen and unfrozen by editing the optimizer *state* alone (no recompilation).

Group ``i`` trains with ``learning_rate * lr_mult_i * trainable_i``; the shared ``learning_rate`` is what the
Learner sets, so schedules keep the groups' ratios, and ``trainable`` (1 or 0) freezes a group exactly: every
alias of :mod:`jaxlearn.optim.alias` ends with the lr scaling, so a zero lr leaves the params bitwise unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlearn.optim.hyperparams import key_name
from jaxlearn.optim.transforms import Numeric


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
    """``n_groups`` per-group lrs growing by ``factor`` up to ``lr`` for the last group.

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


def layer_groups(
    inner_factory: Callable[..., optax.GradientTransformation],
    lrs: Sequence[float],
    groups: int | Callable[[str], int] | None = None,
    **inner_kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
    """:func:`differential` for a Learner, which creates the params itself: one ``inner_factory`` optimizer (an
    alias such as :func:`~jaxlearn.optim.alias.adam`, given ``inner_kwargs``) per layer group, group ``i`` at
    ``lrs[i]``.

    The labels are computed from the params when the optimizer is initialised
    (``param_groups(params, groups)``, ``groups`` defaulting to ``len(lrs)``
    contiguous groups), so ``Learner(model, dls, optimizer=layer_groups(adam,
    lr_range(1e-2, 3)))`` needs no params up front. The Learner's
    ``set_hyper('learning_rate', x)`` (``fit(lr=x)``, ``ParamSchedulerCB``) sets the
    shared lr and keeps the groups' ratios.
    """
    groups = len(lrs) if groups is None else groups
    return differential(inner_factory, lrs, lambda params: param_groups(params, groups), **inner_kwargs)


def _group_of(path: tuple[Any, ...]) -> Hashable | None:
    """Group label of a leaf: the key under the innermost ``multi_transform``."""
    for parent, child in reversed(list(zip(path, path[1:]))):
        if key_name(parent) == "inner_states" and isinstance(child, jax.tree_util.DictKey):
            return child.key
    return None


def freeze_to(opt_state: optax.OptState, n: int) -> optax.OptState:
    """``opt_state`` with groups ``< n`` frozen and the others unfrozen (``n < 0`` counts from the end).

    Sets the ``trainable`` hyperparameter of each :func:`differential` group to
    0 or 1, keeping the leaf's dtype so a jitted step sees identical input
    types and is not retraced.
    """
    n_groups = len(group_labels(opt_state))
    if not n_groups:
        raise ValueError("opt_state has no layer groups: build it with differential()")
    if n < 0:
        n += n_groups

    def visit(path, leaf):
        group = _group_of(path)
        if key_name(path[-1]) != "trainable" or group is None:
            return leaf
        # differential() labels the groups 0, 1, ... in order.
        return jnp.asarray(float(group >= n), leaf.dtype)

    return jax.tree_util.tree_map_with_path(visit, opt_state)


def set_lr_mults(opt_state: optax.OptState, mults: Sequence[float]) -> optax.OptState:
    """``opt_state`` with each :func:`differential` group's ``lr_mult`` set (group ``i`` trains at
    ``learning_rate * mults[i]``), keeping the leaves' dtypes as :func:`freeze_to` does."""
    n_groups = len(group_labels(opt_state))
    if len(mults) != n_groups:
        raise ValueError(f"need one lr multiplier per layer group ({n_groups}), got {len(mults)}: {list(mults)}")

    def visit(path, leaf):
        group = _group_of(path)
        return leaf if key_name(path[-1]) != "lr_mult" or group is None else jnp.asarray(mults[group], leaf.dtype)

    return jax.tree_util.tree_map_with_path(visit, opt_state)


def group_labels(opt_state: optax.OptState) -> set[Hashable]:
    """The labels of the :func:`differential` layer groups in ``opt_state`` (empty without groups)."""
    leaves = jax.tree_util.tree_flatten_with_path(opt_state)[0]
    return {_group_of(path) for path, _ in leaves if key_name(path[-1]) == "trainable"} - {None}


def freeze(opt_state: optax.OptState) -> optax.OptState:
    """``opt_state`` training only the last group (the head), as fastai's ``learn.freeze()``."""
    return freeze_to(opt_state, -1)


def unfreeze(opt_state: optax.OptState) -> optax.OptState:
    """``opt_state`` training every group (fastai's ``learn.unfreeze()``)."""
    return freeze_to(opt_state, 0)


def trainable_flags(opt_state: optax.OptState) -> dict[str, jax.Array]:
    """``{path: flag}`` of every group's ``trainable`` hyperparameter in ``opt_state`` (1 trains, 0 frozen)."""
    leaves = jax.tree_util.tree_flatten_with_path(opt_state)[0]
    return {jax.tree_util.keystr(path): leaf for path, leaf in leaves
            if key_name(path[-1]) == "trainable" and _group_of(path) is not None}

