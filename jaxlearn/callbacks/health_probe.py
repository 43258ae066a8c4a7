"""What the compiled step measures for the training-health report, reduced on the device.

Which layers are activations is read from the model itself, not from its class names: the model is traced
once (``jax.make_jaxpr``) with every module's output captured, and each captured output is classified by the
operation that makes it or that consumes it — ``tanh``, ``logistic`` (sigmoid), or a ReLU-like function
(``relu``, ``leaky_relu``, ``max(z, 0)``, ``elu``, ``silu``, the lesson's ``GeneralRelu``). So a user's own
``flax.linen`` module whose activations are plain functions (``nn.relu(nn.Dense(64)(x))``) is measured like
jaxlearn's: the Dense output is the pre-activation of a ReLU. What cannot be classified (an activation inside
``lax.scan``, GELU's composite) is left out, and said so.

Per probed step (:func:`measure`): the loss; the model input's mean, std and range; the outputs' range and
how far each example's outputs are from summing to 1 (probabilities where logits belong); per activation layer, the
share of positions where each unit fires (pre-activation > 0) or is saturated (|tanh| > 0.97, sigmoid outside
(0.03, 0.97)), and the activation's mean and std; per weight, the RMS of its gradient, of its update and of
itself, and whether gradient and new value are finite; the global gradient norm; and, for a model that
perturbs its hidden states (the stateful RNNs), ‖∂L/∂h_t‖ for every step t of the window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
from jax.extend import core as jex_core
import jax.numpy as jnp
import optax

from jaxlearn.step import StepContext
from jaxlearn.trees import PERTURBATIONS, flatten_intermediates, named_leaves, path_name

TANH_SATURATED = 0.97  # makemore part 3: |tanh| > 0.97 counts as saturated
SIGMOID_SATURATED = 0.03  # the same margin for a sigmoid: outside (0.03, 0.97)
_TANH_Z = math.atanh(TANH_SATURATED)  # |z| beyond which tanh(z) is saturated
_SIGMOID_Z = math.log((1 - SIGMOID_SATURATED) / SIGMOID_SATURATED)
_RELU_LIKE = {"relu", "relu6", "leaky_relu", "elu", "selu", "celu", "silu", "swish", "softplus"}


@dataclass(frozen=True)
class ActivationLayer:
    """A captured module output that is an activation's input (``pre``) or output (``post``)."""
    kind: str   # 'relu' (any ReLU-like function), 'tanh' or 'sigmoid'
    side: str   # 'pre': the function is applied to this output; 'post': this output is the function's


def capture_all(module: Any, method_name: str) -> bool:
    """Every module's output goes to the intermediates collection (the health probe classifies them)."""
    return method_name == "__call__"


# ------------------------------------------------------------------------------------ reading the model

def _sub_jaxprs(eqn) -> list:
    return [getattr(v, "jaxpr", v) for k, v in eqn.params.items()
            if k in ("jaxpr", "call_jaxpr", "fun_jaxpr") and v is not None]


def _has_zero_literal(eqn) -> bool:
    return any(isinstance(v, jex_core.Literal) and v.val == 0 for v in eqn.invars)


def _function_kind(eqn) -> str | None:
    """The activation an equation applies to its first input, if it is one."""
    name = eqn.primitive.name
    if name == "tanh":
        return "tanh"
    if name == "logistic":
        return "sigmoid"
    if name == "max" and _has_zero_literal(eqn):
        return "relu"
    if name in ("jit", "pjit") and eqn.params.get("name") in _RELU_LIKE:
        return "relu"
    if name == "custom_jvp_call":  # jax.nn.relu / relu6: max(x, 0) behind a custom derivative
        inner = [_function_kind(e) for j in _sub_jaxprs(eqn) for e in j.eqns]
        return "relu" if "relu" in inner else None
    return None


def _consumers(jaxpr) -> dict:
    out: dict = {}
    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if isinstance(v, jex_core.Var):
                out.setdefault(v, []).append(eqn)
    return out


def _kind_of_consumers(var, consumers: dict) -> str | None:
    """The activation applied to ``var`` by one of its consumers (through dtype casts and ``x >= 0``
    comparisons that select, as ``jnp.where(x > 0, x, 0)`` does)."""
    for eqn in consumers.get(var, []):
        kind = _function_kind(eqn)
        if kind is not None and eqn.invars[0] is var:
            return kind
        if eqn.primitive.name == "convert_element_type":
            kind = _kind_of_consumers(eqn.outvars[0], consumers)
            if kind is not None:
                return kind
        if eqn.primitive.name in ("gt", "ge") and eqn.invars[0] is var and _has_zero_literal(eqn):
            return "relu"
    return None


def activation_map(apply_fn: Callable, variables: Mapping, x: Any, **apply_kwargs: Any) -> dict[str, ActivationLayer]:
    """``{captured path: ActivationLayer}``: the module outputs that an activation makes or takes, read from the
    jaxpr of one ``apply_fn(variables, x, **apply_kwargs)`` with every module's output captured (shapes only;
    nothing is computed). A post-activation output hides its own pre-activation (the same units)."""
    def captured(v, x):
        _, state = apply_fn(v, x, capture_intermediates=capture_all, mutable=["intermediates"], **apply_kwargs)
        return state.get("intermediates", {})

    variables = {k: v for k, v in variables.items() if k not in ("intermediates", PERTURBATIONS)}
    closed = jax.make_jaxpr(captured)(variables, x)
    tree = jax.eval_shape(captured, variables, x)
    paths = list(flatten_intermediates(jax.tree_util.tree_unflatten(
        jax.tree.structure(tree), range(len(jax.tree.leaves(tree))))).items())
    jaxpr, consumers = closed.jaxpr, _consumers(closed.jaxpr)
    producer = {v: eqn for eqn in jaxpr.eqns for v in eqn.outvars}
    out_vars = jaxpr.outvars
    found: dict[str, ActivationLayer] = {}
    covered = set()  # outputs already named (a block's output is its activation's), and the pre-activations
    for name, i in paths:  # whose post-activation is captured too
        var = out_vars[i]
        eqn = producer.get(var) if isinstance(var, jex_core.Var) else None
        kind = _function_kind(eqn) if eqn is not None else None
        if kind is not None and var not in covered:
            found[name] = ActivationLayer(kind, "post")
            covered.update((var, eqn.invars[0]))
    for name, i in paths:
        var = out_vars[i]
        if name in found or not isinstance(var, jex_core.Var) or var in covered:
            continue
        kind = _kind_of_consumers(var, consumers)
        if kind is not None:
            found[name] = ActivationLayer(kind, "pre")
            covered.add(var)
    return found


def parameter_uses(apply_fn: Callable, variables: Mapping, x: Any, **apply_kwargs: Any) -> tuple[list[str], set[str]]:
    """Read from the forward pass's jaxpr: the params' names (``'Dense_0/kernel'``) in the order it first uses
    them (input to output, whatever the names sort to: flax keeps params sorted by name), and those it only looks
    rows up in (embedding tables: a gather, not a matrix product; each step updates only the rows it met)."""
    closed = jax.make_jaxpr(lambda v, x: apply_fn(v, x, **apply_kwargs))(variables, x)
    leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    name_of = {closed.jaxpr.invars[i]: path_name(path[1:]) for i, (path, _) in enumerate(leaves)
               if getattr(path[0], "key", None) == "params"}
    first: dict[str, int] = {}
    uses: dict[str, set[str]] = {}
    for step, eqn in enumerate(closed.jaxpr.eqns):
        for v in eqn.invars:
            if isinstance(v, jex_core.Var) and v in name_of:
                first.setdefault(name_of[v], step)
                uses.setdefault(name_of[v], set()).add(str(eqn.params.get("name", eqn.primitive.name)))
    names = sorted(name_of.values(), key=lambda n: first.get(n, len(closed.jaxpr.eqns)))
    lookups = {n for n, used in uses.items() if used <= {"gather", "take", "_take", "dynamic_slice"}}
    return names, lookups


# ------------------------------------------------------------------------------------------ in the step

def _activation_stats(a: jax.Array, layer: ActivationLayer) -> dict[str, jax.Array]:
    """Per unit (the last axis): the share of positions where it fires and where it is saturated; the layer's
    activation mean and std (of the activation's output)."""
    z = a.astype(jnp.float32).reshape(-1, a.shape[-1])
    if layer.kind == "relu":
        fires = z > 0
        saturated = jnp.zeros_like(fires)
        out = jnp.maximum(z, 0) if layer.side == "pre" else z
    elif layer.kind == "tanh":
        fires = jnp.ones_like(z, bool)  # a tanh unit has no "off": it can only saturate
        saturated = jnp.abs(z) > (_TANH_Z if layer.side == "pre" else TANH_SATURATED)
        out = jnp.tanh(z) if layer.side == "pre" else z
    else:  # sigmoid
        fires = jnp.ones_like(z, bool)
        saturated = (jnp.abs(z) > _SIGMOID_Z) if layer.side == "pre" else \
            (z < SIGMOID_SATURATED) | (z > 1 - SIGMOID_SATURATED)
        out = jax.nn.sigmoid(z) if layer.side == "pre" else z
    return {"fires": fires.mean(0), "saturated": saturated.mean(0), "mean": out.mean(), "std": out.std()}


def _rms(a: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(a.astype(jnp.float32))))


def _time_norms(g: jax.Array) -> jax.Array:
    """‖∂L/∂h_t‖ for each step t of a (T, B, ...) perturbation gradient."""
    return jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32)).reshape(g.shape[0], -1), axis=1))


def captured_activations(ctx: StepContext, activations: Mapping[str, ActivationLayer]) -> dict[str, jax.Array]:
    """The step's forward pass again, capturing only the activation layers' outputs: the same params, inputs,
    mode and dropout key as the step, so the same numbers. Done only on probed steps: capturing them in every
    step's own forward would make it keep (write out) outputs XLA otherwise fuses away."""
    wanted = set(activations)
    state = ctx.state
    key = jax.random.fold_in(state.rng, state.step)  # the step's dropout key (jaxlearn.step.make_train_step)
    _, new = state.apply(state.variables(ctx.params), ctx.x, True, rngs={"dropout": key},
                         capture_intermediates=lambda m, name: name == "__call__" and "/".join(m.path) in wanted,
                         mutable=["intermediates", *state.model_state])
    return flatten_intermediates(new.get("intermediates", {}))


def measure(ctx: StepContext, activations: Mapping[str, ActivationLayer]) -> dict:
    """One step's numbers for the health rules (see the module docstring), all small arrays. The update is read
    as ``new_params - params`` (both kept by the step anyway)."""
    inputs = [a for a in jax.tree.leaves(ctx.x) if jnp.issubdtype(a.dtype, jnp.floating)]
    grads, new, params = (named_leaves(t) for t in (ctx.grads, ctx.new_params, ctx.params))
    acts = captured_activations(ctx, activations) if activations else {}

    def weight(name: str, p: jax.Array) -> dict[str, jax.Array]:
        p, update = p.astype(jnp.float32), new[name].astype(jnp.float32) - p.astype(jnp.float32)
        return {"grad_rms": _rms(grads[name]), "rms": _rms(p), "std": p.std(), "update_std": update.std(),
                "finite": jnp.isfinite(grads[name]).all() & jnp.isfinite(new[name]).all()}

    preds = ctx.preds.astype(jnp.float32)
    return {
        "loss": ctx.loss,
        "outputs": {"min": preds.min(), "max": preds.max(),
                    "sum_error": jnp.abs(preds.sum(-1) - 1).mean() if preds.ndim > 1 else jnp.float32(jnp.inf)},
        "grad_norm": optax.global_norm(ctx.grads),
        "inputs": [{"mean": a.mean(), "std": a.std(), "min": a.min(), "max": a.max()} for a in inputs],
        "activations": {name: _activation_stats(acts[name], layer) for name, layer in activations.items()
                        if name in acts},
        "params": {name: weight(name, p) for name, p in params.items()},
        "hidden_grads": {name: _time_norms(g) for name, g in ctx.out_grads.items() if g.ndim >= 3},
    }
