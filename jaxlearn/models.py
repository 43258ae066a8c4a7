"""Model builders: lesson 17's stride-2 CNN, in flax.linen (NHWC), with explicit init functions.

Every model's ``__call__`` takes ``(x, train: bool)``; norms follow flax's BatchNorm convention and are
called as ``norm()(x, use_running_average=not train)``, so ``flax.linen.BatchNorm`` and
``jaxlearn.norms.BatchNorm`` are interchangeable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import flax.linen as nn
import jax

from jaxlearn.layers import GeneralRelu

Initializer = Callable[..., jax.Array]
ModuleFactory = Callable[[], nn.Module]


class ConvBlock(nn.Module):
    """miniai's ``conv``: 3×3 conv (padding ks//2, stride 2), then the norm, then the activation.

    No conv bias when a BatchNorm follows (its shift makes the bias redundant).
    """
    features: int
    act: ModuleFactory | None = GeneralRelu
    norm: ModuleFactory | None = None
    kernel_size: int = 3
    stride: int = 2
    use_bias: bool | None = None
    kernel_init: Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        use_bias = self.use_bias if self.use_bias is not None else not _is_batchnorm(self.norm)
        pad = self.kernel_size // 2  # torch-style symmetric padding: 28 → 14 → 7 → 4 → 2 → 1
        x = nn.Conv(self.features, (self.kernel_size,) * 2, strides=self.stride, padding=((pad, pad),) * 2,
                    use_bias=use_bias, kernel_init=self.kernel_init)(x)
        if self.norm is not None:
            x = self.norm()(x, use_running_average=not train)
        if self.act is not None:
            x = self.act()(x)
        return x


def _is_batchnorm(norm: ModuleFactory | None) -> bool:
    cls = norm.func if isinstance(norm, partial) else norm
    return isinstance(cls, type) and "BatchNorm" in cls.__name__


class CNN(nn.Module):
    """Lesson 17's ``get_model``: stride-2 conv blocks over ``nfs``, a last conv to ``n_classes``, flatten."""
    nfs: Sequence[int] = (1, 8, 16, 32, 64)
    act: ModuleFactory | None = GeneralRelu
    norm: ModuleFactory | None = None
    n_classes: int = 10
    kernel_init: Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] != self.nfs[0]:
            raise ValueError(f"CNN expects NHWC images with {self.nfs[0]} channel(s), got shape {x.shape}")
        for nf in self.nfs[1:]:
            x = ConvBlock(nf, self.act, self.norm, kernel_init=self.kernel_init)(x, train)
        x = ConvBlock(self.n_classes, act=None, norm=None, use_bias=True, kernel_init=self.kernel_init)(x, train)
        return x.reshape(x.shape[0], -1)


def get_model(act: ModuleFactory | None = GeneralRelu, nfs: Sequence[int] = (1, 8, 16, 32, 64),
              norm: ModuleFactory | None = None, kernel_init: Initializer = nn.initializers.lecun_normal(),
              n_classes: int = 10) -> CNN:
    """The lesson-17 CNN: e.g. ``get_model(partial(GeneralRelu, leak=.1, sub=.4), norm=BatchNorm)``."""
    return CNN(tuple(nfs), act, norm, n_classes, kernel_init)
