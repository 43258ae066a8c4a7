"""Normalisation layers from scratch (fast.ai lesson 17, makemore part 3).

The lesson's taxonomy, for NHWC activations ``x`` of shape ``(N, H, W, C)``: the
statistics of ``y = (x - mean) / sqrt(var + eps) * scale + bias`` are taken over

* :class:`BatchNorm`    -- N, H, W   (per channel, across the batch; running stats)
* :class:`LayerNorm`    -- H, W, C   (per item)
* :class:`InstanceNorm` -- H, W      (per item and channel)
* :class:`GroupNorm`    -- H, W and the channels of one group (per item and group)

All of them follow ``flax.linen.BatchNorm``'s calling convention,
``norm(x, use_running_average=...)``, with a ``use_running_average`` attribute as
the default, so a model builder can call ``norm()(x, use_running_average=not train)``
whichever norm it was given; only BatchNorm reads the flag. Parameters are named
like flax's (``scale`` = the lesson's ``mults``, ``bias`` = ``adds``; running
``mean``/``var`` in the ``batch_stats`` collection), so variables are
interchangeable with flax's own layers.

Variances are the *biased* estimator ``mean((x - mean)^2)`` (divide by n), which is
what flax uses for normalising and for its running ``var``. PyTorch normalises with
the biased variance too, but its running ``var`` (and the lesson's LayerNorm,
``x.var()``) use the unbiased one -- a factor ``n/(n-1)``, negligible for large n.
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

__all__ = [
    "BatchNorm",
    "LayerNorm",
    "InstanceNorm",
    "GroupNorm",
    "MOMENTS_COLLECTION",
    "calibrate_batchnorm",
]

MOMENTS_COLLECTION = "bn_moments"
"""Collection in which :class:`BatchNorm` sows ``(count, mean, m2)`` of its input,
per channel, when the collection is mutable (used by :func:`calibrate_batchnorm`)."""


def _standardize(x: jax.Array, axes: tuple[int, ...], eps: float) -> jax.Array:
    """``(x - mean) / sqrt(var + eps)`` with mean and biased var over ``axes``."""
    mean = x.mean(axes, keepdims=True)
    var = jnp.square(x - mean).mean(axes, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


class BatchNorm(nn.Module):
    """Batch normalisation: ``y = (x - mean) / sqrt(var + eps) * scale + bias`` per channel.

    Training (``use_running_average=False``): mean and biased var over every axis
    but the last (N, H, W), and the running statistics are lerped toward them,
    ``running = (1 - mom) * running + mom * batch`` -- the lesson's ``mom=0.1``,
    which is flax's ``momentum=0.9`` (flax weights the *old* value). As in flax,
    ``init`` does not update them and a train-mode ``apply`` needs
    ``mutable=['batch_stats']``. Eval (``use_running_average=True``): normalise
    with the running ``mean``/``var`` (initially 0 and 1). ``eps`` sits inside the
    square root, as in PyTorch and flax.

    When the :data:`MOMENTS_COLLECTION` collection is mutable the layer also sows
    the per-channel ``(count, mean, m2)`` of its input for :func:`calibrate_batchnorm`.
    """

    mom: float = 0.1
    eps: float = 1e-5
    use_running_average: bool | None = None

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        axes = tuple(range(x.ndim - 1))
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,))
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,))

        if self.is_mutable_collection(MOMENTS_COLLECTION) and not self.is_initializing():
            # Within-batch two-pass moments; calibrate_batchnorm merges batches
            # exactly (Chan et al.), avoiding sum(x^2) - n*mean^2 cancellation.
            batch_mean = x.mean(axes)
            m2 = jnp.square(x - batch_mean).sum(axes)
            self.sow(MOMENTS_COLLECTION, "moments", (math.prod(x.shape[:-1]), batch_mean, m2))

        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            mean = x.mean(axes)
            var = jnp.square(x - mean).mean(axes)
            if not self.is_initializing():
                ra_mean.value = (1 - self.mom) * ra_mean.value + self.mom * mean
                ra_var.value = (1 - self.mom) * ra_var.value + self.mom * var
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias


class LayerNorm(nn.Module):
    """The lesson's LayerNorm: mean/var over every axis but the batch axis (C, H, W).

    ``y = (x - mean) / sqrt(var + eps) * scale + bias`` with *scalar* ``scale`` and
    ``bias`` (the lesson's ``mult``/``add``), so it equals
    ``nn.LayerNorm(reduction_axes=(1, 2, 3), feature_axes=())``. Works for any rank
    >= 2 (``(N, C)`` too). Independent of the batch, so train and eval agree and
    ``use_running_average`` is accepted only for BatchNorm's calling convention.
    """

    eps: float = 1e-5
    use_running_average: bool | None = None

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        del use_running_average  # same output in train and eval
        scale = self.param("scale", nn.initializers.ones, ())
        bias = self.param("bias", nn.initializers.zeros, ())
        return _standardize(x, tuple(range(1, x.ndim)), self.eps) * scale + bias


class InstanceNorm(nn.Module):
    """Instance norm: mean/var over the spatial axes (H, W) per item and channel.

    Per-channel ``scale``/``bias``; equals ``nn.GroupNorm(num_groups=C)``. Needs at
    least one spatial axis. ``use_running_average`` is accepted and ignored.
    """

    eps: float = 1e-5
    use_running_average: bool | None = None

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        del use_running_average  # same output in train and eval
        if x.ndim < 3:
            raise ValueError(f"InstanceNorm needs (N, *spatial, C) input, got shape {x.shape}")
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        return _standardize(x, tuple(range(1, x.ndim - 1)), self.eps) * scale + bias


class GroupNorm(nn.Module):
    """Group norm: channels split into ``num_groups`` groups of ``C // num_groups``;
    mean/var over the spatial axes and the channels of a group, per item.

    ``num_groups=1`` is a LayerNorm with per-channel affine, ``num_groups=C`` an
    InstanceNorm. Per-channel ``scale``/``bias``; equals ``nn.GroupNorm(num_groups)``
    (default 32, as flax). ``use_running_average`` is accepted and ignored.
    """

    num_groups: int = 32
    eps: float = 1e-5
    use_running_average: bool | None = None

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        del use_running_average  # same output in train and eval
        features = x.shape[-1]
        if features % self.num_groups:
            raise ValueError(f"{features} channels do not split into {self.num_groups} groups")
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        grouped = x.reshape(*x.shape[:-1], self.num_groups, features // self.num_groups)
        axes = (*range(1, grouped.ndim - 2), grouped.ndim - 1)
        return _standardize(grouped, axes, self.eps).reshape(x.shape) * scale + bias


# ------------------------------------------------------------------ calibration

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
    all its calls. Only ``jaxlearn.norms.BatchNorm`` is calibrated; other
    ``batch_stats`` entries (e.g. ``flax.linen.BatchNorm``'s) are left as they are,
    with a warning.

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
            raise ValueError("calibrate_batchnorm: no batches, or no jaxlearn.norms.BatchNorm called")
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
            new[(*path, "mean")] = jnp.asarray(mean, stats[(*path, "mean")].dtype)
            new[(*path, "var")] = jnp.asarray(m2 / n, stats[(*path, "var")].dtype)
        changed = any(not np.array_equal(new[k], stats[k]) for k in new)
        stats = new
        if not changed or done >= (passes or calls_per_forward):
            break
    untouched = {"/".join(k[:-1]) for k in stats} - {"/".join(p) for p in totals}
    if untouched:
        warnings.warn(f"calibrate_batchnorm left batch_stats of {sorted(untouched)} as they were")
    out = {**variables, "batch_stats": unflatten_dict(stats)}
    return freeze(out) if frozen else out
