"""Calibrating BatchNorm: every BatchNorm's running statistics replaced by exact whole-dataset ones.

makemore part 3: after training, the running averages only approximate the statistics of the training set
under the final weights, so measure them properly ("calibrate the batch norm at the end of training").

A BatchNorm-like layer takes part by calling :func:`sow_moments` on its input: in eval mode, when the
:data:`MOMENTS_COLLECTION` collection is mutable, it sows the per-channel ``(count, mean, m2)``.
:func:`calibrate_batchnorm` merges them over the batches and installs them in the layer's ``batch_stats``,
in whichever of the layouts of :data:`RUNNING_STATS` the layer keeps: jaxlearn's and flax's (``mean``, biased
``var``), PyTorch's (``running_mean``, unbiased ``running_var``: makemore's ``BatchNorm1d``), or the lecture's
hand-written one (``bnmean_running``, unbiased ``bnstd_running``: makemore's ``MLP``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
from flax.core import FrozenDict, freeze, unfreeze
from flax.errors import ModifyScopeVariableError
from flax.traverse_util import flatten_dict, unflatten_dict

__all__ = ["MOMENTS_COLLECTION", "RUNNING_STATS", "sow_moments", "calibrate_batchnorm"]

MOMENTS_COLLECTION = "bn_moments"
"""Collection in which a BatchNorm sows ``(count, mean, m2)`` of its input, per channel, when it is mutable."""

RUNNING_STATS: dict[tuple[str, str], Callable[[float, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    ("mean", "var"): lambda n, mean, m2: (mean, m2 / n),                             # flax, jaxlearn.nn.norms
    ("running_mean", "running_var"): lambda n, mean, m2: (mean, m2 / max(n - 1, 1)),  # PyTorch's BatchNorm1d
    ("bnmean_running", "bnstd_running"): lambda n, mean, m2: (mean, np.sqrt(m2 / max(n - 1, 1))),  # makemore
}
"""The names of a layer's two running statistics in ``batch_stats``, and how to compute them from the whole
set's count, mean and sum of squared deviations."""


def sow_moments(module: nn.Module, x: jax.Array) -> None:
    """Sow (as ``module``'s variable) the per-channel ``(count, mean, m2)`` of ``x`` (channels last) into
    :data:`MOMENTS_COLLECTION` when that collection is mutable (never at init). Two-pass within the batch;
    :func:`calibrate_batchnorm` merges batches exactly (Chan et al.), avoiding ``sum(x^2) - n*mean^2``
    cancellation."""
    if module.is_mutable_collection(MOMENTS_COLLECTION) and not module.is_initializing():
        axes = tuple(range(x.ndim - 1))
        mean = x.mean(axes)
        module.sow(MOMENTS_COLLECTION, "moments", (math.prod(x.shape[:-1]), mean, jnp.square(x - mean).sum(axes)))


def _layout(stats: Mapping[tuple[str, ...], Any], path: tuple[str, ...]) -> tuple[str, str] | None:
    return next((names for names in RUNNING_STATS if all((*path, k) in stats for k in names)), None)


Moments = tuple[float, np.ndarray, np.ndarray]  # (count, mean, m2) per channel, float64


def _merge(a: Moments | None, b: Moments) -> Moments:
    """Chan et al.'s exact merge of two sets' (count, mean, sum of squared deviations)."""
    if a is None:
        return b
    (na, ma, sa), (nb, mb, sb) = a, b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * (nb / n), sa + sb + delta**2 * (na * nb / n)


def calibrate_batchnorm(
    model_or_apply: nn.Module | Callable[..., Any],
    variables: Mapping[str, Any],
    batches: Iterable[Any] | Callable[[], Iterable[Any]],
    *,
    passes: int | None = None,
    **apply_kwargs: Any,
) -> Mapping[str, Any]:
    """Replace every :class:`BatchNorm`'s running stats by exact whole-dataset statistics.

    makemore part 3: after training, the EMA ``running_mean/var`` only approximate
    the statistics of the training set under the final weights, so compute them
    properly ("calibrate") -- the result equals a train-mode forward with the whole
    set as one batch. Layer k's statistics depend on layers before it, so each
    pass runs the model in *eval* mode over all batches, accumulates the
    per-channel count, mean and sum of squared deviations of every BatchNorm's
    input (merged exactly across batches in float64), then installs
    ``mean`` and biased ``var = m2 / count`` for all layers at once. After pass p,
    every BatchNorm with at most p BatchNorms on its longest input path (itself
    included) is exact, so as many passes as BatchNorm calls suffice -- the same
    number of forwards as calibrating one layer per pass -- and it stops early
    once a pass changes nothing. Memory is O(channels); any batch size works.

    Args:
      model_or_apply: a flax module, or an ``apply``-like callable
        ``f(variables, x, **flax_apply_kwargs)`` (e.g. ``partial(model.apply, train=False)``).
      variables: the trained variables, with ``batch_stats``.
      batches: the training inputs, iterated once per pass: a re-iterable (list,
        a loader whose ``__iter__`` restarts) or a zero-argument callable returning
        an iterable. Items are arrays ``x`` or ``(x, y, ...)`` tuples/lists.
      passes: maximum number of passes; default: the number of BatchNorm calls
        found in one forward.
      **apply_kwargs: forwarded to every apply; must put the model's BatchNorms in
        eval mode (e.g. ``train=False``).

    A BatchNorm called several times in one forward gets the pooled statistics of
    all its calls. Only layers that call :func:`sow_moments` are calibrated
    (``jaxlearn.nn.BatchNorm``, makemore's layers); other ``batch_stats`` entries
    (e.g. ``flax.linen.BatchNorm``'s) are left as they are, with a warning.

    Returns:
      New variables (the input is not modified), same container type.
    """
    apply_fn = model_or_apply.apply if isinstance(model_or_apply, nn.Module) else model_or_apply
    if callable(batches):
        get_batches = batches
    elif iter(batches) is batches:
        raise TypeError(
            "calibrate_batchnorm iterates the batches once per pass; pass a list, a "
            "re-iterable loader or a zero-argument callable, not a one-shot iterator"
        )
    else:
        get_batches = lambda: batches  # noqa: E731

    @jax.jit
    def batch_moments(variables: Any, x: Any) -> Any:
        _, state = apply_fn(variables, x, mutable=[MOMENTS_COLLECTION], **apply_kwargs)
        return state[MOMENTS_COLLECTION]

    def one_pass(variables: Any) -> tuple[dict[tuple[str, ...], Moments], int]:
        """Whole-set moments of every BatchNorm's input, and BatchNorm calls per forward."""
        totals: dict[tuple[str, ...], Moments] = {}
        calls_per_forward = 0
        for batch in get_batches():
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            try:
                sown = flatten_dict(unfreeze(batch_moments(variables, x)))
            except ModifyScopeVariableError as err:
                raise ValueError(
                    "calibrate_batchnorm needs the BatchNorms in eval mode; pass e.g. "
                    "train=False or partial(model.apply, train=False)"
                ) from err
            calls_per_forward = sum(len(calls) for calls in sown.values())
            for key, calls in sown.items():
                for n, mean, m2 in calls:
                    moments = (float(n), np.asarray(mean, np.float64), np.asarray(m2, np.float64))
                    totals[key[:-1]] = _merge(totals.get(key[:-1]), moments)
        if not totals:
            raise ValueError("calibrate_batchnorm: no batches, or no BatchNorm that sows its moments was called")
        return totals, calls_per_forward

    frozen = isinstance(variables, FrozenDict)
    variables = unfreeze(variables)
    stats = flatten_dict(variables["batch_stats"])
    done = 0
    while True:
        totals, calls_per_forward = one_pass({**variables, "batch_stats": unflatten_dict(stats)})
        done += 1
        new = dict(stats)
        for path, (n, mean, m2) in totals.items():
            names = _layout(stats, path)
            if names is None:
                raise ValueError(f"calibrate_batchnorm: the layer at {'/'.join(path) or '<root>'} sowed moments "
                                 f"but keeps none of the running-statistics layouts {list(RUNNING_STATS)}")
            for name, value in zip(names, RUNNING_STATS[names](n, mean, m2)):
                old = stats[(*path, name)]
                new[(*path, name)] = jnp.asarray(value, old.dtype).reshape(old.shape)
        changed = any(not np.array_equal(new[k], stats[k]) for k in new)
        stats = new
        if not changed or done >= (passes or calls_per_forward):
            break
    untouched = {"/".join(k[:-1]) for k in stats} - {"/".join(p) for p in totals}
    if untouched:
        warnings.warn(f"calibrate_batchnorm left batch_stats of {sorted(untouched)} as they were")
    out = {**variables, "batch_stats": unflatten_dict(stats)}
    return freeze(out) if frozen else out
