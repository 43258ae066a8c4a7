"""Per-layer statistics, reduced inside the compiled step so only small arrays ever leave the device.

miniai's ``ActivationStats`` keeps, per layer and batch, the mean, the std and a 40-bin histogram of |x| over
[0, 10] (``torch.histc``); makemore part 3 adds the fraction of tanh outputs with |t| > 0.97 ("saturated").
Here the same numbers come out of one jitted function applied to each captured activation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

N_BINS = 40
ABS_RANGE = (0.0, 10.0)
SIGNED_RANGE = (-5.0, 5.0)
SATURATION = 0.97


def histogram(x: jax.Array, bins: int = N_BINS, value_range: tuple[float, float] = ABS_RANGE) -> jax.Array:
    """Counts in ``bins`` equal bins over ``value_range``, values outside ignored (``torch.histc``'s rule).

    A value equal to the upper edge falls in the last bin, as in ``torch.histc`` and ``numpy.histogram``.
    """
    lo, hi = value_range
    x = x.reshape(-1).astype(jnp.float32)
    width = (hi - lo) / bins
    inside = (x >= lo) & (x <= hi)
    # Scatter-add of ones is a single pass over x, much cheaper than comparing x with every bin edge;
    # the rounded index is then checked against its bin's edges, as numpy.histogram does.
    idx = jnp.floor((x - lo) * (1.0 / width))
    idx = idx - (x < lo + idx * width)
    idx = idx + ((x >= lo + (idx + 1) * width) & (idx < bins - 1))
    idx = jnp.clip(idx, 0, bins - 1).astype(jnp.int32)
    return jnp.zeros(bins, jnp.float32).at[idx].add(inside.astype(jnp.float32))


def summarize(x: jax.Array, bins: int = N_BINS, saturation: float = SATURATION,
              signed: bool = True) -> dict[str, jax.Array]:
    """mean, std, |x| histogram (40 bins on [0, 10]), signed histogram ([-5, 5]; ``signed=False`` skips it),
    dead and saturated fractions.

    "dead" is miniai's ``dead_chart`` number: the share of |x| in the lowest histogram bin; "saturated" is
    makemore's share of |x| > 0.97.
    """
    x = x.astype(jnp.float32)
    abs_hist = histogram(jnp.abs(x), bins, ABS_RANGE)
    out = {
        "mean": x.mean(),
        "std": x.std(),
        "hist": abs_hist,
        "dead": abs_hist[0] / x.size,
        "saturated": (jnp.abs(x) > saturation).mean(),
    }
    if signed:
        out["signed_hist"] = histogram(x, bins, SIGNED_RANGE)
    return out


def module_filter(*types: type[nn.Module], names: tuple[str, ...] = ()) -> Callable[[nn.Module, str], bool]:
    """A ``capture_intermediates`` filter choosing modules by type (e.g. every GeneralRelu) or by name."""
    def keep(module: nn.Module, method_name: str) -> bool:
        return method_name == "__call__" and (isinstance(module, types) or module.name in names)
    return keep


def flatten_intermediates(intermediates: Mapping[str, Any]) -> dict[str, jax.Array]:
    """``{'Conv_0/GeneralRelu_0': activation, ...}`` from flax's nested ``intermediates`` collection.

    flax stores each captured output as a tuple under ``'__call__'``; the top module's own output (path '')
    is skipped since it is the model's prediction, not a layer.
    """
    flat = {}
    for path, value in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
        keys = [k.key for k in path if hasattr(k, "key")]
        if keys and keys[-1] == "__call__":
            keys = keys[:-1]
        if keys:
            flat["/".join(keys)] = value
    return flat


def summarize_layers(intermediates: Mapping[str, Any], bins: int = N_BINS) -> dict[str, dict[str, jax.Array]]:
    """:func:`summarize` for every captured layer, keyed by the layer's path."""
    return {name: summarize(x, bins) for name, x in flatten_intermediates(intermediates).items()}


def update_ratio(updates: Any, params: Any) -> dict[str, jax.Array]:
    """makemore's update:data ratio per parameter: ``log10(std(update) / std(param))`` (guideline ≈ −3)."""
    ratios = jax.tree.map(lambda u, p: jnp.log10(u.std() / (p.std() + 1e-12) + 1e-20), updates, params)
    return {"/".join(str(getattr(k, "key", k)) for k in path): v
            for path, v in jax.tree_util.tree_flatten_with_path(ratios)[0]}


def grad_data_ratio(grad: jax.Array, param: jax.Array) -> jax.Array:
    """makemore's grad:data ratio of one parameter: ``std(grad) / std(param)`` (plain ratio, not log10)."""
    return grad.astype(jnp.float32).std() / (param.astype(jnp.float32).std() + 1e-12)
