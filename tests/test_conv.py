"""jaxlearn.nn.conv: the CPU's im2col convolution computes what jax.lax.conv_general_dilated computes."""

from functools import partial

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from jax import lax

from jaxlearn.nn import conv
from jaxlearn.vision import ConvBlock, get_model

CASES = [  # input shape, features, kernel, strides, padding
    ((4, 28, 28, 1), 8, (3, 3), 2, ((1, 1), (1, 1))),  # lesson 17's first conv
    ((4, 2, 2, 64), 10, (3, 3), 2, ((1, 1), (1, 1))),  # its last: padding wider than the input
    ((3, 9, 11, 5), 7, (3, 2), (1, 2), "SAME"),
    ((3, 9, 11, 5), 7, (3, 3), 1, "VALID"),
    ((3, 8, 8, 6), 4, (1, 1), 2, "VALID"),  # a ResNet shortcut's 1×1 stride-2 conv
    ((2, 10, 6), 4, (5,), 2, "SAME"),  # 1-D
    ((2, 6, 6, 4), 4, (3, 3), 1, "CIRCULAR"),  # flax pads, then a VALID conv
]


def _loss(module, variables, x):
    return jnp.sum(jnp.sin(module.apply(variables, x)))


@pytest.mark.parametrize("shape, features, kernel, strides, padding", CASES)
def test_values_and_gradients_equal_lax(shape, features, kernel, strides, padding):
    x = jax.random.normal(jax.random.key(0), shape)
    plain = nn.Conv(features, kernel, strides=strides, padding=padding)
    ours = nn.Conv(features, kernel, strides=strides, padding=padding, conv_general_dilated=conv.conv_general_dilated)
    variables = plain.init(jax.random.key(1), x)
    chex.assert_trees_all_equal_shapes(variables, ours.init(jax.random.key(1), x))
    chex.assert_trees_all_close(jax.jit(ours.apply)(variables, x), plain.apply(variables, x), atol=1e-5, rtol=1e-5)
    grads = jax.jit(jax.grad(partial(_loss, ours), argnums=(0, 1)))(variables, x)
    expected = jax.grad(partial(_loss, plain), argnums=(0, 1))(variables, x)
    chex.assert_trees_all_close(grads, expected, atol=1e-4, rtol=1e-4)


def _convolutions_in(fn, *args) -> int:
    return jax.jit(fn).lower(*args).compile().as_text().count("convolution(")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the slices are the CPU's lowering only")
def test_cpu_trains_without_xla_convolutions():
    """On the CPU neither the forward nor the gradients of the lesson-17 CNN leave a convolution to XLA."""
    model = get_model(norm=None)
    x = jnp.ones((2, 28, 28, 1))
    variables = model.init(jax.random.key(0), x)

    def loss(params):
        return model.apply({**variables, "params": params}, x).sum()

    def lax_conv(a):  # the count is of real convolutions: lax's own lowers to one
        return lax.conv_general_dilated(a, jnp.ones((3, 3, 1, 8)), (2, 2), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert _convolutions_in(lax_conv, x) == 1
    assert _convolutions_in(jax.grad(loss), variables["params"]) == 0


@pytest.mark.parametrize("kwargs", [dict(feature_group_count=2), dict(rhs_dilation=(2, 2)),
                                    dict(lhs_dilation=(2, 2)), dict(dimension_numbers=("NCHW", "OIHW", "NCHW"))])
def test_other_cases_are_lax_itself(kwargs):
    """Grouped, dilated or channels-first convolutions are passed on to jax.lax.conv_general_dilated."""
    x = jax.random.normal(jax.random.key(0), (2, 4, 9, 9) if "dimension_numbers" in kwargs else (2, 9, 9, 4))
    groups = kwargs.get("feature_group_count", 1)
    w = jax.random.normal(jax.random.key(1), (6, 4 // groups, 3, 3) if "dimension_numbers" in kwargs
                          else (3, 3, 4 // groups, 6))
    dn = kwargs.pop("dimension_numbers", ("NHWC", "HWIO", "NHWC"))
    dn = lax.conv_dimension_numbers(x.shape, w.shape, dn)
    pads = ((1, 1), (1, 1))
    expected = lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=dn, **kwargs)
    chex.assert_trees_all_equal(conv.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=dn, **kwargs),
                                expected)


def test_conv_block_keeps_flax_parameters():
    """ConvBlock still holds a flax.linen.Conv named Conv_0: checkpoints, LSUV and init hooks see the same tree."""
    variables = ConvBlock(8).init(jax.random.key(0), jnp.ones((1, 28, 28, 1)))
    chex.assert_shape(variables["params"]["Conv_0"]["kernel"], (3, 3, 1, 8))
    chex.assert_shape(variables["params"]["Conv_0"]["bias"], (8,))
