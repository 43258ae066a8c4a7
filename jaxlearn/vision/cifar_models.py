"""The ladder of fast.ai 2018 lesson 7's "CIFAR-10 from scratch", in flax.linen (NHWC, logits out).

Each rung adds one idea to the one before: a fully connected net (47%), stride-2 convolutions (~60%), padding,
BatchNorm written from scratch (68%), more layers (~65%: no gain), then residual layers with dropout and TTA (85%).
Every model's ``__call__`` takes ``(x, train)``; the inputs are normalized images
(:func:`~jaxlearn.vision.cifar.cifar10_callbacks`). The lesson's models end in ``log_softmax``; these return the logits, which the Learner's
cross-entropy takes. Global pooling is the lesson's ``adaptive_max_pool2d(x, 1)``: a max over height and width.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlearn.nn.layers import Dropout

__all__ = ["SimpleNet", "ConvNet", "ConvLayer", "ConvNet2", "BnLayer", "ResnetLayer", "ConvBnNet", "ConvBnNet2",
           "Resnet2"]


def _global_max_pool(x: jax.Array) -> jax.Array:
    # one max-pool window over the whole image, not x.max((1, 2)): reduce_max's gradient divides by the count of
    # elements equal to the max, which turned NaN on a flat (dead) channel in XLA's unoptimized CPU code (the
    # tests'); max_pool's gradient goes to one maximum, as torch's adaptive_max_pool2d's does
    return nn.max_pool(x, x.shape[1:3]).reshape(x.shape[0], x.shape[-1])


class SimpleNet(nn.Module):
    """Lesson 7's ``SimpleNet([32*32*3, 40, 10])``: flatten, then linear layers of ``layers`` sizes with a ReLU
    between them; 123,330 parameters, 47% accuracy.

    Args:
        layers: the sizes, input first (3072 for a 32×32×3 image) and the classes last.
    """
    layers: Sequence[int] = (3072, 40, 10)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.layers[0]:
            raise ValueError(f"SimpleNet: inputs have {x.shape[1]} values each, layers[0] is {self.layers[0]}")
        for i, n_out in enumerate(self.layers[1:]):
            x = nn.Dense(n_out)(x if i == 0 else nn.relu(x))
        return x


class ConvNet(nn.Module):
    """Lesson 7's ``ConvNet([3, 20, 40, 80], 10)``: unpadded 3×3 stride-2 convolutions with ReLU (32→15→7→3), a
    global max pool and a linear layer to the classes; 37,490 parameters (the lesson's "~30k"), ~60% accuracy
    (lr 1e-1, cycle_len 1).

    Args:
        layers: the channels, the input's 3 first.
        n_classes: the outputs of the last linear layer.
    """
    layers: Sequence[int] = (3, 20, 40, 80)
    n_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        for features in self.layers[1:]:
            x = nn.relu(nn.Conv(features, (3, 3), strides=2, padding="VALID")(x))
        return nn.Dense(self.n_classes)(_global_max_pool(x))


class ConvLayer(nn.Module):
    """Lesson 7's ``ConvLayer``: a 3×3 stride-2 convolution with padding 1 (32→16→8), then a ReLU.

    Args:
        features: the output channels.
    """
    features: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        return nn.relu(nn.Conv(self.features, (3, 3), strides=2, padding=((1, 1), (1, 1)))(x))


class ConvNet2(nn.Module):
    """Lesson 7's ``ConvNet2``: :class:`ConvNet` built of padded :class:`ConvLayer` s (32→16→8→4), the same 37,490
    parameters and ~60% accuracy.

    Args:
        layers: the channels, the input's 3 first.
        n_classes: the outputs of the last linear layer.
    """
    layers: Sequence[int] = (3, 20, 40, 80)
    n_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        for features in self.layers[1:]:
            x = ConvLayer(features)(x, train)
        return nn.Dense(self.n_classes)(_global_max_pool(x))


class BnLayer(nn.Module):
    """Lesson 7's ``BnLayer``, BatchNorm from scratch: conv (no bias) → ReLU → ``(x - mean_c) / std_c * m + a``.

    ``m`` (ones) and ``a`` (zeros) are parameters, per channel, as the lesson's ``nn.Parameter`` s. In training
    ``mean_c`` and ``std_c`` (unbiased, as torch's ``std``) are the batch's, over N, H and W, and gradients flow
    through them; they are kept (collection ``batch_stats``: ``means``, ``stds``) and evaluation uses the last
    training batch's, as the lesson's ``self.means`` / ``self.stds`` do (real BatchNorm keeps moving averages).
    ``std_c`` is ``sqrt(var_c + eps)``: the lesson has no ``eps``, and a channel the ReLU zeroes over a whole batch
    would then divide by 0 (and the gradient of ``sqrt`` at 0 is infinite).
    The padding is always ``padding`` (the lesson's 1), whatever the kernel size.

    Args:
        features: the output channels.
        stride: the convolution's stride (2 halves the image).
        kernel_size: the convolution's (square) kernel size.
        padding: the zero padding on each side.
        eps: added to the variance.
    """
    features: int
    stride: int = 2
    kernel_size: int = 3
    padding: int = 1
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        pad = ((self.padding, self.padding),) * 2
        x = nn.relu(nn.Conv(self.features, (self.kernel_size,) * 2, strides=self.stride, padding=pad,
                            use_bias=False)(x))
        means = self.variable("batch_stats", "means", jnp.zeros, (self.features,))
        stds = self.variable("batch_stats", "stds", jnp.ones, (self.features,))
        if train:
            mean, std = x.mean(axis=(0, 1, 2)), jnp.sqrt(x.var(axis=(0, 1, 2), ddof=1) + self.eps)
            if not self.is_initializing():
                means.value, stds.value = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(std)
        else:
            mean, std = means.value, stds.value
        m = self.param("m", nn.initializers.ones, (self.features,))
        a = self.param("a", nn.initializers.zeros, (self.features,))
        return (x - mean) / std * m + a


class ResnetLayer(nn.Module):
    """Lesson 7's ``ResnetLayer(BnLayer)``: ``x + f(x)``, ``f`` a stride-1 :class:`BnLayer` keeping the channels,
    so each layer fits the residual the layers before left ("boosting").

    Args:
        features: the channels, in and out.
    """
    features: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        return x + BnLayer(self.features, stride=1)(x, train)


class ConvBnNet(nn.Module):
    """Lesson 7's ``ConvBnNet([10, 20, 40, 80, 160], 10)``: a 5×5 stride-1 first conv (3→10 channels, padding 2),
    stride-2 :class:`BnLayer` s, global max pool, linear; 155,970 parameters, 68% accuracy (45→57→68%, still
    rising).

    Args:
        layers: the channels, the first conv's 10 first.
        n_classes: the outputs of the last linear layer.
        deep: a stride-1 :class:`BnLayer` after each stride-2 one (:class:`ConvBnNet2`).
    """
    layers: Sequence[int] = (10, 20, 40, 80, 160)
    n_classes: int = 10
    deep: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        x = nn.Conv(self.layers[0], (5, 5), padding=((2, 2), (2, 2)))(x)
        for features in self.layers[1:]:
            x = BnLayer(features)(x, train)
            if self.deep:
                x = BnLayer(features, stride=1)(x, train)
        return nn.Dense(self.n_classes)(_global_max_pool(x))


class ConvBnNet2(ConvBnNet):
    """Lesson 7's deep BatchNorm net ``ConvBnNet2([10, 20, 40, 80, 160], 10)``: :class:`ConvBnNet` with a stride-1
    :class:`BnLayer` after each stride-2 one (the two lists zipped: 9 conv layers); 462,570 parameters, ~65%
    accuracy: deeper, no gain.

    Args:
        layers: the channels, the first conv's 10 first.
        n_classes: the outputs of the last linear layer.
        deep: True here.
    """
    deep: bool = True


class Resnet2(nn.Module):
    """Lesson 7's ``Resnet2([16, 32, 64, 128, 256], 10, 0.2)``: a 7×7 stride-1 :class:`BnLayer` (3→16 channels,
    padding 1 as the lesson's: 32→28), then per width a stride-2 :class:`BnLayer` and two :class:`ResnetLayer` s,
    global max pool, dropout ``p``, linear; 1,966,234 parameters. 85% with TTA (wd 1e-6, lr 1e-2, SGDR).

    Args:
        layers: the channels, the first layer's 16 first.
        n_classes: the outputs of the last linear layer.
        p: the dropout probability before the linear layer (the lesson's 0.2).
    """
    layers: Sequence[int] = (16, 32, 64, 128, 256)
    n_classes: int = 10
    p: float = 0.2

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        x = BnLayer(self.layers[0], stride=1, kernel_size=7)(x, train)
        for features in self.layers[1:]:
            x = BnLayer(features)(x, train)
            x = ResnetLayer(features)(x, train)
            x = ResnetLayer(features)(x, train)
        x = Dropout(self.p)(_global_max_pool(x), train)
        return nn.Dense(self.n_classes)(x)
