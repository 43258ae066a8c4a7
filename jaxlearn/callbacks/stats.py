"""Per-layer statistics, reduced inside the compiled step so only small arrays ever leave the device.

miniai's ``ActivationStats`` keeps, per layer and batch, the mean, the std and a 40-bin histogram of |x| over
[0, 10] (``torch.histc``); makemore part 3 adds the fraction of tanh outputs with |t| > 0.97 ("saturated").
Here the same numbers come out of one jitted function applied to each captured activation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlearn.trees import named_leaves

N_BINS = 40
"""Histogram bins (miniai's ``histc(40, 0, 10)``)."""
ABS_RANGE = (0.0, 10.0)
"""The range of the |x| histogram."""
SIGNED_RANGE = (-5.0, 5.0)
"""The range of the signed histogram."""
SATURATION = 0.97
"""|x| above which a (tanh) activation counts as saturated (makemore part 3)."""


def histogram(x: jax.Array, bins: int = N_BINS, value_range: tuple[float, float] = ABS_RANGE) -> jax.Array:
    """Counts of the values of ``x`` in ``bins`` equal bins over ``value_range``, values outside ignored
    (``torch.histc``'s rule).

    A value equal to the upper edge falls in the last bin, as in ``torch.histc`` and ``numpy.histogram``.
    """
    return _count_codes(_bin_index(x.astype(jnp.float32), bins, value_range), bins + 1)[:bins].astype(jnp.float32)


def _bin_index(x: jax.Array, bins: int, value_range: tuple[float, float]) -> jax.Array:
    """numpy.histogram's bin of each value (int32, same shape as x); values outside the range get ``bins``."""
    lo, hi = value_range
    if _exact_binning(lo, hi, bins):
        # x · bins/(hi − lo) is exact for a power-of-two scale, so floor() already gives numpy's bin.
        idx = jnp.floor(x * (bins / (hi - lo))) - lo * bins / (hi - lo)
    else:
        # Otherwise the rounded index is checked against its bin's edges, as numpy.histogram does.
        width = (hi - lo) / bins
        idx = jnp.floor((x - lo) * (1.0 / width))
        idx = idx - (x < lo + idx * width)
        idx = idx + ((x >= lo + (idx + 1) * width) & (idx < bins - 1))
    idx = jnp.clip(idx, 0, bins - 1)
    return jnp.where((x >= lo) & (x <= hi), idx, bins).astype(jnp.int32)


def _exact_binning(lo, hi, bins: int) -> bool:
    """True when the range is static, bins/(hi − lo) a power of two and lo a whole number of bins."""
    if not all(isinstance(v, (int, float)) for v in (lo, hi)):
        return False
    scale = bins / (hi - lo)
    return math.frexp(scale)[0] == 0.5 and float(lo * scale).is_integer() and abs(lo * scale) < 2 ** 23


_LANES = 8


def _count_codes(codes: jax.Array, n_codes: int) -> jax.Array:
    """``bincount(codes, length=n_codes)`` for codes in [0, n_codes), as one scatter-add of ones.

    Neighbouring elements along the last axis count into 8 separate copies of the counters (summed at the
    end), so the serial scatter loop rarely waits on the counter it has just written.
    """
    codes = codes.reshape(1) if codes.ndim == 0 else codes
    lane = jax.lax.broadcasted_iota(jnp.int32, codes.shape, codes.ndim - 1) % _LANES
    counts = jax.lax.scatter_add(
        jnp.zeros(_LANES * n_codes, jnp.int32), (codes + n_codes * lane)[..., None],
        jnp.ones(codes.shape, jnp.int32),
        jax.lax.ScatterDimensionNumbers(update_window_dims=(), inserted_window_dims=(0,),
                                        scatter_dims_to_operand_dims=(0,)),
        mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS)
    return counts.reshape(_LANES, n_codes).sum(0)


def summarize(x: jax.Array, bins: int = N_BINS, saturation: float = SATURATION,
              signed: bool = True) -> dict[str, jax.Array]:
    """The statistics of the activations ``x``: mean, std, |x| histogram (``bins`` bins on [0, 10]), signed
    histogram ([-5, 5]; ``signed=False`` skips it), dead and saturated fractions.

    "dead" is miniai's ``dead_chart`` number: the share of |x| in the lowest histogram bin; "saturated" is
    makemore's share of |x| > ``saturation`` (0.97).
    """
    x = x.astype(jnp.float32)
    n = x.size
    # Sums of (x − c) and (x − c)² fuse into one pass; c, any one value of x, keeps E[d²] − E[d]² from
    # cancelling when the mean is large against the std.
    c = x[(0,) * x.ndim]
    d = x - c
    d_mean = d.sum() / n
    var = jnp.maximum((d * d).sum() / n - d_mean * d_mean, 0.0)
    # One scatter counts both the |x| histogram and saturation: code = 2·bin + (|x| > saturation).
    a = jnp.abs(x)
    codes = 2 * _bin_index(a, bins, ABS_RANGE) + (a > saturation)
    counts = _count_codes(codes, 2 * (bins + 1)).reshape(bins + 1, 2)
    abs_hist = counts[:bins].sum(1).astype(jnp.float32)
    out = {
        "mean": c + d_mean,
        "std": jnp.sqrt(var),
        "hist": abs_hist,
        "dead": abs_hist[0] / n,
        "saturated": counts[:, 1].sum() / n,
    }
    if signed:
        out["signed_hist"] = histogram(x, bins, SIGNED_RANGE)
    return out


def module_filter(*types: type[nn.Module], names: tuple[str, ...] = ()) -> Callable[[nn.Module, str], bool]:
    """A ``capture_intermediates`` filter choosing modules by type (``types``, e.g. every GeneralRelu) or by
    name (``names``)."""
    def keep(module: nn.Module, method_name: str) -> bool:
        return method_name == "__call__" and (isinstance(module, types) or module.name in names)
    return keep


def update_ratio(updates: Any, params: Any) -> dict[str, jax.Array]:
    """makemore's update:data ratio per parameter: ``log10(std(update) / std(param))`` (guideline ≈ −3), from
    the optimizer's ``updates`` and the ``params`` they apply to, keyed by parameter path."""
    return named_leaves(jax.tree.map(lambda u, p: jnp.log10(u.std() / (p.std() + 1e-12) + 1e-20), updates, params))


def grad_data_ratio(grad: jax.Array, param: jax.Array) -> jax.Array:
    """makemore's grad:data ratio of one parameter: ``std(grad) / std(param)`` (plain ratio, not log10)."""
    return grad.astype(jnp.float32).std() / (param.astype(jnp.float32).std() + 1e-12)
