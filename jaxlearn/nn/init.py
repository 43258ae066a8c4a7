"""Weight initialisation: Glorot, Kaiming, LeCun, PyTorch's default, and LSUV.

Every ``*_normal`` / ``*_uniform`` function here is a *factory*: called with its
hyper-parameters it returns a flax/JAX initializer ``init(key, shape, dtype)``,
so it plugs straight into ``kernel_init``::

    nn.Conv(16, (3, 3), kernel_init=kaiming_normal(a=0.1))
    nn.Dense(100, kernel_init=lecun_normal(gain=calculate_gain('tanh')))

Fans follow flax's kernel layouts -- Dense ``(in, out)``, Conv ``(kh, kw, in, out)``:
``fan_in = prod(shape[:-1])`` and ``fan_out = shape[-1] * prod(shape[:-2])``
(output channels times receptive field), which is what PyTorch computes for its
``(out, in, kh, kw)`` layout.

Normal initialisers are *untruncated* (like ``torch.nn.init.kaiming_normal_``);
flax's ``he_normal`` / ``glorot_normal`` truncate at 2 sigma and rescale, which is a
different distribution with the same variance.

:func:`lsuv` is the data-dependent Layer-Sequential Unit-Variance init of
Mishkin & Matas (2015) as taught in fast.ai lesson 17.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn
from flax.core import FrozenDict, freeze, unfreeze
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxlearn.nn.layers import GeneralRelu

__all__ = [
    "Initializer",
    "compute_fans",
    "calculate_gain",
    "glorot_normal",
    "glorot_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "lecun_normal",
    "torch_default",
    "torch_default_bias",
    "LINEAR_TYPES",
    "ACTIVATION_TYPES",
    "find_lsuv_pairs",
    "lsuv",
]

Initializer = Callable[..., jax.Array]
"""``init(key, shape, dtype=jnp.float32) -> Array`` -- flax's ``kernel_init`` signature."""


def compute_fans(shape: Sequence[int]) -> tuple[int, int]:
    """Return ``(fan_in, fan_out)`` of a flax kernel of ``shape``.

    ``fan_in = prod(shape[:-1])`` (inputs feeding one output unit) and
    ``fan_out = shape[-1] * prod(shape[:-2])`` (outputs one input unit feeds).
    """
    if len(shape) < 2:
        raise ValueError(f"fans need a kernel of rank >= 2, got shape {tuple(shape)}")
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """Recommended gain for a nonlinearity (same table as ``torch.nn.init.calculate_gain``).

    'linear'/'conv'/'sigmoid' -> 1, 'tanh' -> 5/3 (makemore part 3), 'relu' -> sqrt(2),
    'leaky_relu' -> sqrt(2 / (1 + a^2)) with ``a = param`` (default 0.01), 'selu' -> 3/4.
    """
    if nonlinearity in ("linear", "conv", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        a = 0.01 if param is None else param
        return math.sqrt(2.0 / (1.0 + a**2))
    if nonlinearity == "selu":
        return 0.75
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}")


def _normal(std_of_fans: Callable[[int, int], float]) -> Initializer:
    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        std = std_of_fans(*compute_fans(shape))
        return std * jax.random.normal(key, shape, dtype)

    return init


def _uniform(bound_of_fans: Callable[[int, int], float]) -> Initializer:
    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        bound = bound_of_fans(*compute_fans(shape))
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _select_fan(mode: str) -> Callable[[int, int], int]:
    if mode == "fan_in":
        return lambda fan_in, fan_out: fan_in
    if mode == "fan_out":
        return lambda fan_in, fan_out: fan_out
    raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")


def glorot_normal(gain: float = 1.0) -> Initializer:
    """Glorot/Xavier normal: ``W ~ N(0, std^2)``, ``std = gain * sqrt(2 / (n_in + n_out))``.

    Keeps activation *and* gradient variance roughly constant through linear
    (or tanh-around-0) layers by compromising between the fan-in and fan-out.
    """
    return _normal(lambda fan_in, fan_out: gain * math.sqrt(2.0 / (fan_in + fan_out)))


def glorot_uniform(gain: float = 1.0) -> Initializer:
    """Glorot/Xavier uniform: ``W ~ U(-b, b)``, ``b = gain * sqrt(6 / (n_in + n_out))``.

    ``U(-b, b)`` has variance ``b^2 / 3``, i.e. the same ``2 / (n_in + n_out)`` as
    :func:`glorot_normal`.
    """
    return _uniform(lambda fan_in, fan_out: gain * math.sqrt(6.0 / (fan_in + fan_out)))


def kaiming_normal(a: float = 0.0, mode: str = "fan_in", gain: float | None = None) -> Initializer:
    """Kaiming/He normal: ``W ~ N(0, std^2)``, ``std = gain / sqrt(fan)``.

    ``gain = sqrt(2 / (1 + a^2))`` for a (leaky) ReLU with negative slope ``a``
    (lesson 17: a ReLU zeroes half the variance, so double it back); pass ``gain``
    to override it (e.g. 5/3 for tanh, makemore part 3). ``mode='fan_in'`` preserves
    forward activation variance, ``'fan_out'`` backward gradient variance.
    Untruncated, like ``torch.nn.init.kaiming_normal_``.
    """
    fan = _select_fan(mode)
    g = calculate_gain("leaky_relu", a) if gain is None else gain
    return _normal(lambda fan_in, fan_out: g / math.sqrt(fan(fan_in, fan_out)))


def kaiming_uniform(a: float = 0.0, mode: str = "fan_in", gain: float | None = None) -> Initializer:
    """Kaiming/He uniform: ``W ~ U(-b, b)``, ``b = gain * sqrt(3 / fan)``, ``gain = sqrt(2 / (1 + a^2))``.

    Same variance ``gain^2 / fan`` as :func:`kaiming_normal` (``b^2/3 = gain^2/fan``); ``a``, ``mode`` (which
    fan) and ``gain`` as there.
    """
    fan = _select_fan(mode)
    g = calculate_gain("leaky_relu", a) if gain is None else gain
    return _uniform(lambda fan_in, fan_out: g * math.sqrt(3.0 / fan(fan_in, fan_out)))


def lecun_normal(gain: float = 1.0) -> Initializer:
    """The lesson's plain init: ``W ~ N(0, std^2)``, ``std = gain / sqrt(n_in)``.

    Lesson 17 calls ``1/sqrt(n_in)`` "Glorot"; makemore part 3 uses it as
    ``randn(fan_in, fan_out) / fan_in**0.5`` and multiplies by ``gain = 5/3`` for tanh.
    It keeps the variance of a *linear* layer's output equal to its input's.
    """
    return _normal(lambda fan_in, fan_out: gain / math.sqrt(fan_in))


def torch_default() -> Initializer:
    """PyTorch's default ``nn.Linear``/``nn.Conv2d`` weight init: ``U(-1/sqrt(n_in), 1/sqrt(n_in))``.

    PyTorch calls ``kaiming_uniform_(w, a=sqrt(5))``: gain ``sqrt(2 / (1 + 5)) = sqrt(1/3)``
    and bound ``sqrt(1/3) * sqrt(3 / n_in) = 1/sqrt(n_in)`` -- a variance of ``1/(3 n_in)``,
    a third of what keeps activations alive, which is why the lesson's baseline trains badly.
    """
    return kaiming_uniform(a=math.sqrt(5.0))


def torch_default_bias(fan_in: int) -> Initializer:
    """PyTorch's default bias init ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

    The bias's own shape ``(out,)`` does not carry the layer's fan-in (flax hands
    ``bias_init`` only that shape), so it has to be given: ``fan_in = in_features * kh * kw``.
    """
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# --------------------------------------------------------------------------- LSUV

LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.Conv, nn.ConvTranspose, nn.Dense)
"""Modules LSUV rescales (they own a ``kernel`` and usually a ``bias`` param)."""

ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (GeneralRelu, nn.PReLU)
"""Modules whose output LSUV normalises by default. Plain functions such as
``nn.relu`` are not modules and are invisible to flax's interception."""

Path = tuple[str, ...]
PathLike = Path | str


def _as_path(p: PathLike) -> Path:
    # "block/Conv_0" and ("block", "Conv_0") both name the same module.
    return tuple(q for q in p.split("/") if q) if isinstance(p, str) else tuple(p)


def _path_str(p: Path) -> str:
    return "/".join(p) or "<root>"


def _as_apply(model_or_apply: nn.Module | Callable[..., Any]) -> Callable[..., Any]:
    return model_or_apply.apply if isinstance(model_or_apply, nn.Module) else model_or_apply


def _trace_calls(
    apply_fn: Callable[..., Any], variables: Mapping[str, Any], x: Any, **apply_kwargs: Any
) -> list[tuple[Path, nn.Module]]:
    """Every module ``__call__`` in execution order, as ``(path, module)``.

    Flax consults the ``capture_intermediates`` filter right after each method
    returns, so recording from inside the filter gives completion order -- which for
    leaf layers (convs, activations) is their execution order. ``jax.eval_shape``
    makes this free: nothing is computed.
    """
    calls: list[tuple[Path, nn.Module]] = []

    def record(mdl: nn.Module, method_name: str) -> bool:
        if method_name == "__call__":
            calls.append((tuple(mdl.path), mdl))
        return False

    jax.eval_shape(
        lambda v, x: apply_fn(v, x, capture_intermediates=record, **_mutables(v), **apply_kwargs),
        variables,
        x,
    )
    return calls


def _mutables(variables: Mapping[str, Any], *extra: str) -> dict[str, Any]:
    # batch_stats is made mutable so that a model whose norms run in *train* mode
    # can still be applied; its updated statistics are simply dropped.
    cols = [*extra, *(["batch_stats"] if "batch_stats" in variables else [])]
    return {"mutable": cols} if cols else {}


def find_lsuv_pairs(
    model_or_apply: nn.Module | Callable[..., Any],
    variables: Mapping[str, Any],
    x: Any,
    *,
    act_types: tuple[type[nn.Module], ...] = ACTIVATION_TYPES,
    linear_types: tuple[type[nn.Module], ...] = LINEAR_TYPES,
    **apply_kwargs: Any,
) -> list[tuple[str, str]]:
    """Default LSUV pairs ``[(linear_path, act_path), ...]`` in execution order, from one traced call of
    ``model_or_apply`` (a flax module, or its ``apply``) with ``variables`` on the inputs ``x``.

    Each Conv/Dense (``linear_types``) is paired with the first activation module
    (``act_types``) called after it and before the next Conv/Dense; a linear layer
    with no such activation (e.g. the final classifier, as in the lesson's
    ``zip(relus, convs)``) is left alone. Layers in between (a BatchNorm, say) are
    allowed. Paths are '/'-joined module names, e.g. ``'layers_0'`` or ``'block/Conv_0'``.
    These are the pairs :func:`lsuv` uses when given none; ``apply_kwargs`` are
    forwarded to apply (e.g. ``train=False``).
    """
    trace = _trace_calls(_as_apply(model_or_apply), variables, x, **apply_kwargs)
    return _pairs_from_trace(trace, act_types, linear_types)


def _pairs_from_trace(
    trace: list[tuple[Path, nn.Module]],
    act_types: tuple[type[nn.Module], ...],
    linear_types: tuple[type[nn.Module], ...],
) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    pending: Path | None = None
    for path, mdl in trace:
        if isinstance(mdl, linear_types):
            pending = path
        elif isinstance(mdl, act_types) and pending is not None:
            pairs.append((_path_str(pending), _path_str(path)))
            pending = None
    return pairs


def lsuv(
    model_or_apply: nn.Module | Callable[..., Any],
    variables: Mapping[str, Any],
    batch: Any,
    pairs: Sequence[tuple[PathLike, PathLike]] | None = None,
    *,
    tol: float = 1e-3,
    max_iters: int = 200,
    strict: bool = True,
    **apply_kwargs: Any,
) -> Mapping[str, Any]:
    """Layer-Sequential Unit-Variance init (Mishkin & Matas 2015; fast.ai lesson 17).

    For each ``(linear, act)`` pair, first to last, repeat on one ``batch``::

        h = act output;  linear.bias -= mean(h);  linear.kernel /= std(h)

    until ``|mean(h)| < tol`` and ``|std(h) - 1| < tol``. Earlier layers are
    finished before later ones because a later activation depends on them.
    ``std`` is the population std over every element of the activation. A linear
    layer without ``bias`` only gets its ``std`` fixed (the mean is left as is).

    Args:
      model_or_apply: a flax module or its ``apply``-like callable
        ``f(variables, x, **flax_apply_kwargs)``.
      variables: the model's variables (``params``, maybe ``batch_stats``).
      batch: the input ``x`` (a ``(x, y)`` tuple/list is accepted; ``x`` is used).
      pairs: ``[(linear_path, act_path), ...]`` with '/'-joined or tuple module
        paths; ``act_path == linear_path`` normalises the layer's own output. If
        None, :func:`find_lsuv_pairs` picks each Conv/Dense's next activation module.
      tol: convergence tolerance on the mean and on ``std - 1`` (lesson: 1e-3).
      max_iters: updates allowed per pair. Leaky activations converge in ~10; a
        plain ReLU with ``sub`` needs ~100 (the mean shrinks only ~8% per step).
      strict: if a pair does not converge, raise ``RuntimeError`` (True) or warn.
      **apply_kwargs: forwarded to every apply, e.g. ``train=False``.

    BatchNorm: ``batch_stats`` is passed mutable and its updates are discarded, so
    the model may be applied in either mode. Use eval mode (recommended): fresh
    running stats (mean 0, var 1) make BN nearly the identity, so rescaling the conv
    moves the activation. In train mode a BN between the pair re-normalises the
    conv output, LSUV cannot move it, and the pair fails to converge.

    Returns:
      New variables (the input is not modified), same container type.
    """
    apply_fn = _as_apply(model_or_apply)
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    trace = _trace_calls(apply_fn, variables, x, **apply_kwargs)
    if pairs is None:
        pairs = _pairs_from_trace(trace, ACTIVATION_TYPES, LINEAR_TYPES)
        if not pairs:
            raise ValueError(
                "lsuv found no (Conv/Dense, activation module) pair; activations must be "
                "modules such as GeneralRelu (not functions like nn.relu), or pass pairs="
            )
    pair_paths = [(_as_path(lin), _as_path(act)) for lin, act in pairs]

    # Which call of each activation belongs to its pair: a module shared across
    # layers (set up once, called after every conv) is stored by flax as a tuple of
    # outputs under one path, so the pair uses the first call after its linear layer.
    calls = [path for path, _ in trace]
    call_slots: list[tuple[Path, int]] = []
    for lin, act in pair_paths:
        if lin not in calls:
            raise ValueError(f"lsuv: module {_path_str(lin)!r} is never called")
        after = calls.index(lin) if act != lin else calls.index(lin) - 1
        following = [i for i, p in enumerate(calls) if p == act and i > after]
        if not following:
            raise ValueError(f"lsuv: {_path_str(act)!r} is not called after {_path_str(lin)!r}")
        call_slots.append((act, calls[: following[0]].count(act)))
    captured = {act for act, _ in call_slots}

    def capture(mdl: nn.Module, method_name: str) -> bool:
        return method_name == "__call__" and tuple(mdl.path) in captured

    @jax.jit
    def act_stats(params: Any, others: Any, x: Any) -> list[tuple[jax.Array, jax.Array]]:
        _, state = apply_fn(
            {**others, "params": params},
            x,
            capture_intermediates=capture,
            **_mutables(others, "intermediates"),
            **apply_kwargs,
        )
        inter = flatten_dict(unfreeze(state["intermediates"]))
        outs = [inter[(*act, "__call__")][k] for act, k in call_slots]
        return [(h.mean(), h.std()) for h in outs]

    frozen = isinstance(variables, FrozenDict)
    variables = unfreeze(variables)
    others = {k: v for k, v in variables.items() if k != "params"}
    params = flatten_dict(variables["params"])
    for i, (lin, act) in enumerate(pair_paths):
        if (*lin, "kernel") not in params:
            raise ValueError(f"lsuv: {_path_str(lin)!r} has no 'kernel' param")
        has_bias = (*lin, "bias") in params
        for it in range(max_iters + 1):
            mean, std = (float(s) for s in act_stats(unflatten_dict(params), others, x)[i])
            if abs(std - 1) < tol and (abs(mean) < tol or not has_bias):
                break
            if not math.isfinite(std) or std == 0:
                # Dividing by a zero/NaN std would silently wreck the kernel.
                raise RuntimeError(
                    f"lsuv: activation {_path_str(act)!r} after {_path_str(lin)!r} has std {std}"
                )
            if it == max_iters:
                msg = (
                    f"lsuv: layer {_path_str(lin)!r} (activation {_path_str(act)!r}) did not "
                    f"converge in {max_iters} iterations: mean {mean:.4g}, std {std:.4g}. "
                    "A norm layer between them in train mode makes its output "
                    "scale-invariant; apply the model in eval mode."
                )
                if strict:
                    raise RuntimeError(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
                break
            if has_bias:
                params[(*lin, "bias")] = params[(*lin, "bias")] - mean
            params[(*lin, "kernel")] = params[(*lin, "kernel")] / std
    out = {**others, "params": unflatten_dict(params)}
    return freeze(out) if frozen else out
