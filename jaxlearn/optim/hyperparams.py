r"""Injected hyperparameters: how the Learner reads and sets an optimizer's learning rate, momentum or any
other number without recompiling, and how it makes a ready transformation from a factory.

``optax.inject_hyperparams(factory)(...)`` keeps every numeric argument in the optimizer *state*
(``opt_state.hyperparams``), so ``fit(lr=...)``, ``ParamSchedulerCB`` and the LR finder edit the state — on
the host with :func:`set_hyperparams`, or inside the compiled step from the step counter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlearn.checks import check_positive
from jaxlearn.optim.transforms import Numeric

DEFAULT_LR = 0.1
"""The learning rate :func:`make_optimizer` gives a factory when neither it nor the Learner sets one."""


class MissingHyperparameter(KeyError):
    """The optimizer state has no injected hyperparameter of that name; the message says how to get one."""

    def __str__(self) -> str:  # KeyError would print the message quoted, as a key
        return str(self.args[0])


def missing_message(names: Sequence[str], have: set[str]) -> str:
    """Why ``names`` cannot be set (the optimizer injects only ``have``), and how to write the optimizer so that
    they can."""
    return (f"no injected hyperparameter named {sorted(names)} (the optimizer injects {sorted(have) or 'none'}). "
            f"A ready GradientTransformation (e.g. optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(3e-4))) "
            f"keeps its settings inside, so fit(lr=...), fit_one_cycle, lr_find and the schedules cannot change "
            f"them. Pass a factory instead, which the Learner wraps with optax.inject_hyperparams: "
            f"optimizer=partial(optax.adamw, weight_decay=0.01), or for a chain "
            f"optimizer=lambda learning_rate: optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(learning_rate)); "
            f"or inject it yourself inside the chain: optax.inject_hyperparams(optax.adamw)(learning_rate=3e-4)")


def set_hyperparams(opt_state: optax.OptState, **values: Numeric) -> optax.OptState:
    """``opt_state`` with its injected hyperparameters set (every group's, if several) from ``values`` by name.

    Like ``optax.tree_utils.tree_set(opt_state, learning_rate=x)`` but casts
    ``x`` to the dtype of the leaf it replaces. ``inject_hyperparams`` stores
    strongly typed float32 arrays while a Python float is weakly typed, and jit
    traces once per input type: mixing the two costs one extra compilation.
    """
    found = set()

    def visit(path, leaf):
        name = key_name(path[-1])
        if len(path) < 2 or key_name(path[-2]) != "hyperparams" or name not in values:
            return leaf
        found.add(name)
        return jnp.asarray(values[name], leaf.dtype)

    opt_state = jax.tree_util.tree_map_with_path(visit, opt_state)
    if missing := set(values) - found:
        raise MissingHyperparameter(missing_message(sorted(missing), hyperparam_names(opt_state)))
    return opt_state


def key_name(key: Any) -> Hashable:
    """The name in a pytree path ``key``: an attribute's name or a dict key (``None`` for a sequence index)."""
    return key.name if isinstance(key, jax.tree_util.GetAttrKey) else getattr(key, "key", None)


def get_hyperparam(opt_state: optax.OptState, name: str) -> float:
    """The value of the injected hyperparameter ``name`` in ``opt_state`` (the first group's, if several), read
    to the host."""
    try:
        leaves = optax.tree_utils.tree_get_all_with_path(opt_state, name)
    except KeyError:
        leaves = []
    if not leaves:
        raise MissingHyperparameter(missing_message([name], hyperparam_names(opt_state)))
    return float(np.asarray(leaves[0][1]).reshape(-1)[0])


def hyperparam_names(opt_state: optax.OptState) -> set[str]:
    """The names of the injected hyperparameters in ``opt_state`` (those ``set_hyperparams`` can set)."""
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(opt_state)[0]]
    return {key_name(p[-1]) for p in paths if len(p) >= 2 and key_name(p[-2]) == "hyperparams"}


def make_optimizer(optimizer: optax.GradientTransformation | Callable[..., optax.GradientTransformation],
                   lr: float | None = None) -> optax.GradientTransformation:
    """A ready transformation from ``optimizer``, a transformation or a factory.

    A factory (``optax.sgd``, ``partial(optax.adamw, learning_rate=3e-4, b1=0.9)``) is wrapped with
    ``optax.inject_hyperparams`` so that its numeric settings can change between steps without recompiling;
    what the user bound is used as given, and ``lr`` (default 0.1) only fills a learning rate left unset —
    or replaces it when given explicitly. A schedule passed as ``learning_rate`` stays a schedule. A factory
    of your own works the same way: ``lambda learning_rate: optax.chain(optax.clip_by_global_norm(1.0),
    optax.adamw(learning_rate))``. A ready transformation is used as it is (the Learner sets ``lr`` in its state
    when it injects a learning rate, and otherwise refuses it with :class:`MissingHyperparameter`, which says how
    to write it as a factory).
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

