"""Model builders: lesson 17's stride-2 CNN, in flax.linen (NHWC), with explicit init functions.

Every model's ``__call__`` takes ``(x, train: bool)``; norms follow flax's BatchNorm convention and are
called as ``norm()(x, use_running_average=not train)``, so ``flax.linen.BatchNorm`` and
``jaxlearn.nn.BatchNorm`` are interchangeable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn.nn import conv
from jaxlearn.nn.layers import Dropout, GeneralRelu

Initializer = Callable[..., jax.Array]
ModuleFactory = Callable[[], nn.Module]


class ConvBlock(nn.Module):
    """miniai's ``conv``: 3×3 conv (padding ks//2, stride 2), then the norm, then the activation.

    No conv bias when a BatchNorm follows (its shift makes the bias redundant; ``use_bias`` overrides). The
    conv is flax's, computed on the CPU by :func:`jaxlearn.nn.conv.conv_general_dilated` (im2col: ~30% faster
    training steps there).

    Args:
        features: output channels.
        act: a factory of the activation module (``GeneralRelu``, ``partial(GeneralRelu, leak=0.1)``); None: none.
        norm: a factory of the norm module (``BatchNorm``...), called as ``norm()(x, use_running_average=...)``;
            None: none.
        kernel_size: the conv's (square) kernel size ``ks``; padding ``ks // 2``.
        stride: the conv's stride (2 halves the image).
        use_bias: the conv's bias; None: unless the norm is a BatchNorm.
        kernel_init: the conv's kernel initializer (e.g. :func:`~jaxlearn.nn.init.kaiming_normal`).
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
                    use_bias=use_bias, kernel_init=self.kernel_init,
                    conv_general_dilated=conv.conv_general_dilated)(x)
        if self.norm is not None:
            x = self.norm()(x, use_running_average=not train)
        if self.act is not None:
            x = self.act()(x)
        return x


def _is_batchnorm(norm: ModuleFactory | None) -> bool:
    cls = norm.func if isinstance(norm, partial) else norm
    return isinstance(cls, type) and "BatchNorm" in cls.__name__


class CNN(nn.Module):
    """Lesson 17's ``get_model``: stride-2 conv blocks over ``nfs``, a last conv to ``n_classes``, flatten.
    ``act``, ``norm`` and ``kernel_init`` are every :class:`ConvBlock`'s (see :func:`get_model`)."""
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
    """The lesson-17 CNN: e.g. ``get_model(partial(GeneralRelu, leak=.1, sub=.4), norm=BatchNorm)``.

    Args:
        act: a factory of each block's activation (``GeneralRelu``; ``partial(GeneralRelu, leak=0.1, sub=0.4)``
            is the lesson's); None: no activation.
        nfs: the channels: the input's first (1 for Fashion-MNIST), then one stride-2 conv block per entry
            (28 → 14 → 7 → 4 → 2 for four blocks), before the last conv to ``n_classes`` (→ 1).
        norm: a factory of each block's norm (``jaxlearn.nn.BatchNorm``, ``flax.linen.BatchNorm``...); None: none.
        kernel_init: the convs' kernel initializer (flax's LeCun normal; the lesson's
            :func:`~jaxlearn.nn.init.kaiming_normal` for ReLUs).
        n_classes: the outputs (logits) per image.
    """
    return CNN(tuple(nfs), act, norm, n_classes, kernel_init)


# --------------------------------------------------------------------------------------------- ResNets
# fast.ai 2018 lesson 7 (``ResnetLayer``: x + f(x)) and course22 lesson 13/14 (miniai ``ResBlock``).

def dropout_ps(ps: float | Sequence[float], n: int) -> tuple[float, ...]:
    """Per-layer dropout probabilities for a head of ``n`` linear layers (fast.ai's ``ps``).

    A list gives one ``p`` per linear layer (applied to that layer's input) and must have ``n`` entries; a
    single number ``p`` is fastai's rule: ``p`` before the last layer and ``p / 2`` before the others, e.g.
    ``dropout_ps(0.5, 3) == (0.25, 0.25, 0.5)``.
    """
    if isinstance(ps, (int, float)):
        ps = (ps / 2,) * (n - 1) + (ps,)
    ps = tuple(float(p) for p in ps)
    if len(ps) != n:
        raise ValueError(f"need one dropout p per head layer ({n}), got {len(ps)}: {ps}")
    if any(not 0 <= p < 1 for p in ps):
        raise ValueError(f"dropout ps must be in [0, 1), got {ps}")
    return ps


def avg_pool_2x2_ceil(x: jax.Array) -> jax.Array:
    """PyTorch's ``AvgPool2d(2, ceil_mode=True)`` on NHWC images ``x``: 2×2 means, odd sizes keep their last
    row/column
    (averaged over the pixels that exist: 7 → 4). Written as pad + reshape + sum with a constant divisor,
    which XLA compiles and runs much faster on CPU than ``nn.avg_pool(count_include_pad=False)``."""
    n, h, w, c = x.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
    sums = x.reshape(n, (h + ph) // 2, 2, (w + pw) // 2, 2, c).sum(axis=(2, 4))
    counts = np.pad(np.ones((h, w), np.float32), ((0, ph), (0, pw))).reshape(
        (h + ph) // 2, 2, (w + pw) // 2, 2).sum(axis=(1, 3))
    return sums / jnp.asarray(counts, x.dtype)[None, :, :, None]


class ResBlock(nn.Module):
    """miniai's ``ResBlock``: ``act(convs(x) + idconv(pool(x)))``.

    ``convs`` = conv(ni→nf, stride 1, norm, act) then conv(nf→nf, ``stride``, norm, no act); the shortcut is
    the identity when the shape is kept, else a 2×2 average pool (``stride`` 2, ceil mode: 7 → 4) and/or a
    1×1 conv to ``features`` channels (with bias, no norm, as in the course). The input's channel count is
    read from ``x``, so only ``features`` is given. ``kernel_size``, ``act``, ``norm`` and ``kernel_init`` are
    the convs' (:class:`ConvBlock`).
    """
    features: int
    stride: int = 1
    kernel_size: int = 3
    act: ModuleFactory | None = GeneralRelu
    norm: ModuleFactory | None = None
    kernel_init: Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        if self.stride not in (1, 2):
            raise ValueError(f"ResBlock stride must be 1 or 2, got {self.stride}")
        h = ConvBlock(self.features, self.act, self.norm, self.kernel_size, stride=1,
                      kernel_init=self.kernel_init, name="conv1")(x, train)
        h = ConvBlock(self.features, None, self.norm, self.kernel_size, stride=self.stride,
                      kernel_init=self.kernel_init, name="conv2")(h, train)
        if self.stride == 2:
            x = avg_pool_2x2_ceil(x)
        if x.shape[-1] != self.features:
            x = ConvBlock(self.features, act=None, norm=None, kernel_size=1, stride=1, use_bias=True,
                          kernel_init=self.kernel_init, name="idconv")(x, train)
        h = h + x
        return self.act()(h) if self.act is not None else h


class ResNet(nn.Module):
    """A course22-style ResNet for small images (lesson 14's Fashion-MNIST model).

    ``ResBlock(nfs[0], ks=first_kernel_size, stride=1)`` then one stride-2 ``ResBlock`` per further entry of
    ``nfs`` (28 → 14 → 7 → 4 → 2 for five entries), global average pooling, an optional head of hidden
    linear layers (``head_features``) with dropout ``ps`` before each linear layer (fast.ai 2018), the
    linear classifier to ``n_classes`` (no bias) and, with a norm, a BatchNorm over the logits as in the course
    (``logit_norm=False``: the classifier keeps its bias and no norm). ``act``, ``norm`` and ``kernel_init`` are
    every layer's (:class:`ResBlock`, the head).
    """
    nfs: Sequence[int] = (16, 32, 64, 128, 256)
    act: ModuleFactory | None = GeneralRelu
    norm: ModuleFactory | None = None
    n_classes: int = 10
    first_kernel_size: int = 5
    kernel_init: Initializer = nn.initializers.lecun_normal()
    head_features: Sequence[int] = ()
    ps: float | Sequence[float] = 0.0
    logit_norm: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"ResNet expects NHWC images, got shape {x.shape}")
        x = ResBlock(self.nfs[0], 1, self.first_kernel_size, self.act, self.norm, self.kernel_init)(x, train)
        for nf in self.nfs[1:]:
            x = ResBlock(nf, 2, 3, self.act, self.norm, self.kernel_init)(x, train)
        x = x.mean(axis=(1, 2))  # global average pool
        sizes = (*self.head_features, self.n_classes)
        ps = dropout_ps(self.ps, len(sizes))
        for i, (nf, p) in enumerate(zip(sizes, ps)):
            last = i == len(sizes) - 1
            if p > 0:
                x = Dropout(p)(x, train)
            use_norm = self.norm is not None and (self.logit_norm or not last)
            x = nn.Dense(nf, use_bias=not use_norm, kernel_init=self.kernel_init)(x)
            if use_norm:
                x = self.norm()(x, use_running_average=not train)
            if not last and self.act is not None:
                x = self.act()(x)
        return x


def fmnist_resnet(act: ModuleFactory | None = None, norm: ModuleFactory | None = None,
                  nfs: Sequence[int] = (16, 32, 64, 128, 256), kernel_init: Initializer | None = None,
                  ps: float | Sequence[float] = 0.0, head_features: Sequence[int] = (),
                  n_classes: int = 10) -> ResNet:
    """The Fashion-MNIST ResNet of course22 lesson 14: ``ResBlock(1,16,ks=5)``, ``ResBlock(16,32)``, ... 256,
    global average pool, linear, BatchNorm; GeneralRelu(0.1, 0.4) and Kaiming(a=0.1) init by default.

    ``act``, ``norm`` (default :class:`~jaxlearn.nn.BatchNorm`) and ``kernel_init`` replace those defaults;
    ``nfs``, ``ps``, ``head_features`` and ``n_classes`` are :class:`ResNet`'s."""
    from jaxlearn.nn.init import kaiming_normal
    from jaxlearn.nn.norms import BatchNorm
    act = act if act is not None else partial(GeneralRelu, leak=0.1, sub=0.4)
    norm = norm if norm is not None else BatchNorm
    kernel_init = kernel_init if kernel_init is not None else kaiming_normal(a=0.1)
    return ResNet(tuple(nfs), act, norm, n_classes, 5, kernel_init, tuple(head_features), ps)
