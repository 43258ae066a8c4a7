"""Small flax.linen layers from the lessons."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

__all__ = ["GeneralRelu"]


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
