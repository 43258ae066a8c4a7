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

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxlearn.nn.calibrate import sow_moments

__all__ = ["BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm"]


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

    When calibrating (:func:`jaxlearn.nn.calibrate.calibrate_batchnorm`) it sows
    the per-channel ``(count, mean, m2)`` of its input.
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

        sow_moments(self, x)  # when calibrating (jaxlearn.nn.calibrate)

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
    least one spatial axis. ``eps`` is added to the variance; ``use_running_average``
    is accepted and ignored.
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
    (default 32, as flax). ``eps`` is added to the variance; ``use_running_average``
    is accepted and ignored.
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
