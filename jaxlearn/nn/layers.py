"""Small flax.linen layers from the lessons."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

__all__ = ["GeneralRelu", "Dropout"]


class GeneralRelu(nn.Module):
    """miniai's ``GeneralRelu`` (fast.ai lesson 17): ``min(leaky_relu(x, leak) - sub, maxv)``.

    ``leak=None`` gives a plain ReLU. Subtracting ``sub`` (the lesson uses
    ``leak=0.1, sub=0.4``) pulls the mean of the activations back towards 0 -- a
    ReLU of unit-variance input has mean ~0.4 -- and ``maxv`` optionally clamps
    the top. Each step is skipped when its argument is None.
    """

    leak: float | None = None
    sub: float | None = None
    maxv: float | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(x) if self.leak is None else nn.leaky_relu(x, self.leak)
        if self.sub is not None:
            x = x - self.sub
        if self.maxv is not None:
            x = jnp.minimum(x, self.maxv)
        return x


class Dropout(nn.Module):
    """Inverted dropout (fast.ai 2018 lesson 4; DLVU "Bag of tricks"): in training each unit is zeroed with
    probability ``p`` and the survivors are scaled by ``1 / (1 - p)``, so every unit's expected value is
    unchanged and evaluation is the identity (no rescaling at test time).

    Called as the other models' layers, ``Dropout(p)(x, train)``; ``deterministic=True`` (attribute or
    keyword, flax's convention) is the same as ``train=False``. The random mask comes from the ``'dropout'``
    PRNG stream, which the Learner's train step supplies (``rngs={'dropout': key}``, a key derived from the
    train state's seed and step; ``rng_collection`` names another stream). ``broadcast_dims`` shares one mask
    along those axes (e.g. ``(1, 2)`` drops whole channels of NHWC feature maps).
    """

    p: float = 0.5
    broadcast_dims: tuple[int, ...] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool | None = None, *, deterministic: bool | None = None) -> jax.Array:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {self.p}")
        if deterministic is None:
            deterministic = self.deterministic
        if train is None:
            if deterministic is None:
                raise ValueError("Dropout needs train=True/False (or deterministic=...)")
            train = not deterministic
        elif deterministic is not None and deterministic == train:
            raise ValueError(f"Dropout: train={train} contradicts deterministic={deterministic}")
        if not train or self.p == 0.0:
            return x
        if self.p == 1.0:
            return jnp.zeros_like(x)
        shape = tuple(1 if ax % x.ndim in {d % x.ndim for d in self.broadcast_dims} else n
                      for ax, n in enumerate(x.shape))
        keep = jax.random.bernoulli(self.make_rng(self.rng_collection), 1.0 - self.p, shape)
        return jnp.where(keep, x / (1.0 - self.p), jnp.zeros((), x.dtype)).astype(x.dtype)
