"""A linen parameter tree drawn again as PyTorch's default inits draw it: to train a model as a PyTorch notebook
does (fast.ai 2018's ``--protocol lesson``), where flax's defaults differ.

PyTorch's defaults (``nn.Linear.reset_parameters``, ``nn.Embedding``, ``nn.RNNBase.reset_parameters``):

* ``nn.Linear`` / ``nn.Conv*``: weight and bias U(−1/√fan_in, 1/√fan_in)
  (:func:`~jaxlearn.nn.init.torch_default`), where flax draws the kernel LeCun-normal (√3 times the standard
  deviation) and zeroes the bias;
* ``nn.Embedding``: N(0, 1), where flax's ``nn.Embed`` draws N(0, 1/features);
* ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM``: every weight and bias U(−1/√hidden, 1/√hidden), where flax's cells draw
  LeCun-normal input kernels, orthogonal recurrent ones and zero biases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax.traverse_util import flatten_dict, unflatten_dict

__all__ = ["torch_reinit"]


def _is_identity(x: jax.Array) -> bool:
    return x.ndim == 2 and x.shape[0] == x.shape[1] and bool(jnp.array_equal(x, jnp.eye(x.shape[0], dtype=x.dtype)))


def torch_reinit(params: Mapping[str, Any], key: jax.Array,
                 recurrent: Callable[[tuple[str, ...]], bool] = lambda path: False) -> dict[str, Any]:
    """``params`` with every Dense / Conv layer, embedding and recurrent cell drawn again as PyTorch draws it.

    A layer is a dict holding ``kernel`` (and maybe ``bias``): U(±1/√fan_in) for both, ``fan_in =
    prod(kernel.shape[:-1])``; inside a recurrent cell (``recurrent(path)`` true for the layer's path, e.g.
    ``('rnn', 'cell', 'i')``) U(±1/√hidden), ``hidden = kernel.shape[-1]`` (each of a cell's layers outputs
    the hidden size). ``embedding``: N(0, 1). A square kernel equal to the identity stays: an identity init
    (lesson 6 copies ``eye`` in after PyTorch's init). Other parameters (norm scales, …) are kept.

    Args:
        params: a linen ``params`` collection.
        key: the random key the new values are drawn from.
        recurrent: says which layers belong to a recurrent cell, from their path.
    """
    flat = flatten_dict(dict(params))
    keys = iter(jax.random.split(key, len(flat)))
    out = {}
    for path, value in flat.items():
        *layer, name = path
        k = next(keys)
        if name == "embedding":
            out[path] = jax.random.normal(k, value.shape, value.dtype)
            continue
        kernel = flat.get((*layer, "kernel"))
        if name not in ("kernel", "bias") or kernel is None or (name == "kernel" and _is_identity(value)):
            out[path] = value
            continue
        fan = kernel.shape[-1] if recurrent(tuple(layer)) else math.prod(kernel.shape[:-1])
        bound = 1.0 / math.sqrt(fan)
        out[path] = jax.random.uniform(k, value.shape, value.dtype, -bound, bound)
    return unflatten_dict(out)
