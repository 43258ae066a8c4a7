"""Convolutions that XLA's CPU backend trains fast: im2col by strided slices and one matrix product.

On the CPU, XLA lowers a convolution's gradients to convolutions with dilated inputs and transposed layouts
(a stride-2 conv's input gradient multiplies mostly inserted zeros) that run far slower than the forward conv.
Written as ``patches @ kernel``, where the patches are ``kh·kw`` strided slices of the padded input, the
forward is one matrix product, the kernel gradient another, and the input gradient a matrix product followed
by interior-padded adds of the slices' gradients: work XLA:CPU does well. Measured on lesson 17's
BatchNorm CNN (bs 256, 2-core CPU, alternating 40-batch fits): 14.7 → 10.7 and 13.6 → 9.7 ms per training
step in two runs; with 10 steps per compiled call (a ``lax.scan``, where XLA:CPU's own conv gradients are
slower still) 59 → 10 ms. The ResNet of ``experiments/resnet.py``: 1028 → 860 ms per step.

:func:`conv_general_dilated` has ``jax.lax.conv_general_dilated``'s signature and is what ``flax.linen.Conv``
takes as its ``conv_general_dilated`` attribute, so a model keeps flax's module, parameters and names::

    nn.Conv(16, (3, 3), strides=2, conv_general_dilated=jaxlearn.nn.conv.conv_general_dilated)

It computes the same function (floats may round differently). The slices are used on the CPU only
(``jax.lax.platform_dependent``); GPUs and TPUs keep their own convolution kernels, and so does every case
the slices do not cover (grouped or dilated convolutions, layouts other than channels-last).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

Padding = str | Sequence[tuple[int, int]]


def _channels_last(dimension_numbers: lax.ConvDimensionNumbers | None, ndim: int) -> bool:
    """True for flax's layout: input (N, spatial..., C), kernel (spatial..., I, O), output like the input."""
    if dimension_numbers is None:
        return False
    spatial = tuple(range(1, ndim - 1))
    dn = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
    return (dn.lhs_spec == (0, ndim - 1, *spatial) and dn.out_spec == (0, ndim - 1, *spatial)
            and dn.rhs_spec == (ndim - 1, ndim - 2, *range(ndim - 2)))


def _slices_conv(lhs: jax.Array, rhs: jax.Array, strides: tuple[int, ...], pads: Sequence[tuple[int, int]],
                 out_size: Sequence[int], precision) -> jax.Array:
    """The convolution of channels-last ``lhs`` (N, *S, C) with ``rhs`` (*K, C, O): every kernel offset's
    strided slice of the padded input, side by side in the kernel's (offset, channel) order, times the
    kernel reshaped to (K·C, O)."""
    window = rhs.shape[:-2]
    padded = jnp.pad(lhs, ((0, 0), *pads, (0, 0)))
    columns = [padded[(slice(None),
                       *(slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offset, strides, out_size)),
                       slice(None))]
               for offset in itertools.product(*(range(k) for k in window))]
    patches = jnp.concatenate(columns, axis=-1)  # (N, *out, K·C)
    return jnp.matmul(patches, rhs.reshape(-1, rhs.shape[-1]), precision=precision)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding: Padding,
                         lhs_dilation: Sequence[int] | None = None, rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: lax.ConvDimensionNumbers | None = None,
                         feature_group_count: int = 1, batch_group_count: int = 1, precision=None,
                         preferred_element_type=None) -> jax.Array:
    """``jax.lax.conv_general_dilated``, computed on the CPU as im2col (strided slices) and one matrix product
    for channels-last, ungrouped, undilated convolutions; every other case, and every other platform, calls
    ``jax.lax.conv_general_dilated`` itself. The arguments are lax's: the input ``lhs`` and kernel ``rhs``,
    ``window_strides``, ``padding``, ``lhs_dilation`` / ``rhs_dilation``, ``dimension_numbers``,
    ``feature_group_count`` / ``batch_group_count``, ``precision`` and ``preferred_element_type``."""
    def lax_conv(lhs, rhs):
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, batch_group_count, precision,
                                        preferred_element_type)

    n_spatial = lhs.ndim - 2
    undilated = all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
    if not (undilated and feature_group_count == 1 and batch_group_count == 1 and preferred_element_type is None
            and _channels_last(dimension_numbers, lhs.ndim)):
        return lax_conv(lhs, rhs)
    strides = tuple(window_strides)
    pads = (lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:-2], strides, padding) if isinstance(padding, str)
            else [tuple(p) for p in padding])
    if len(pads) != n_spatial or any(lo < 0 or hi < 0 for lo, hi in pads):
        return lax_conv(lhs, rhs)
    out_size = [(n + lo + hi - k) // s + 1 for n, (lo, hi), k, s in zip(lhs.shape[1:-1], pads, rhs.shape[:-2], strides)]
    if min(out_size) < 1:
        return lax_conv(lhs, rhs)  # lax's own checks and message

    def slices(lhs, rhs):
        return _slices_conv(lhs, rhs, strides, pads, out_size, precision)
    return lax.platform_dependent(lhs, rhs, cpu=slices, default=lax_conv)

