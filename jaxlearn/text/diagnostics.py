"""What the lessons' RNNs do inside, reduced on the device: how far back the gradient reaches through the bptt
window (:func:`hidden_grad_norms`, ‖∂L/∂h_t‖ for every step) and how many gates are stuck open or shut
(:func:`gate_saturation`), for one batch or averaged over a stream of batches with the hidden state carried as
in training (:func:`carried_diagnostics`)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn.data import ArrayDataset
from jaxlearn.losses import cross_entropy
from jaxlearn.step import CARRY
from jaxlearn.text.cells import GATES
from jaxlearn.text.models import StatefulCharRnn, Variables
from jaxlearn.trees import PERTURBATIONS, zero_perturbations

GATE_LOW, GATE_HIGH = 0.05, 0.95  # a sigmoid gate outside (0.05, 0.95) counts as saturated
TANH_SATURATED = 0.97  # makemore's |tanh| > 0.97


def _stateful_vars(model: nn.Module, variables: Variables) -> dict:
    if not isinstance(model, StatefulCharRnn):
        raise TypeError(f"expected a StatefulCharRnn, got {type(model).__name__}")
    return {k: variables[k] for k in ("params", CARRY) if k in variables}


@functools.partial(jax.jit, static_argnames="model")
def hidden_grad_norms(model: StatefulCharRnn, variables: Variables, x: jax.Array, y: jax.Array) -> jax.Array:
    """‖∂L/∂h_t‖ for every step t of the bptt window and every layer of ``model`` with ``variables``, on the
    batch ``x`` (B, T) with targets ``y``: shape (n_layers, T).

    L is the batch's mean :func:`~jaxlearn.losses.cross_entropy` (eval mode, starting from the variables' carry);
    h_t is each layer's hidden state at step t, and ∂L/∂h_t includes every path through the later steps of
    the window (a zero perturbation is added to h_t inside the recurrence, flax's ``perturb``). The norm is
    over the batch and hidden units. h_t reaches the losses of steps t … T−1: if the gradient carried back
    through the recurrence vanishes, ‖∂L/∂h_t‖ barely grows from t = T−1 to t = 0 (each state only serves the
    next few outputs); if it explodes, the early steps' norms blow up.
    """
    base = _stateful_vars(model, variables)
    zeros = zero_perturbations(model.apply, base, x, mutable=[PERTURBATIONS])

    def loss(perturbations):
        return cross_entropy(model.apply({**base, PERTURBATIONS: perturbations}, x), y).mean()

    grads = jax.grad(loss)(zeros)["rnn"]
    return jnp.stack([jnp.sqrt(jnp.sum(jnp.square(grads[f"h_{layer}"]), axis=(1, 2)))
                      for layer in range(model.n_layers)])


@functools.partial(jax.jit, static_argnames="model")
def gate_saturation(model: StatefulCharRnn, variables: Variables, x: jax.Array) -> dict[str, jax.Array]:
    """Fraction of saturated activations of ``model`` with ``variables`` over one batch ``x`` (eval mode), keyed
    ``'layer_<l>/<gate>'``.

    GRU (``r``, ``z``) and LSTM (``i``, ``f``, ``o``): the share of sigmoid gates below 0.05 or above 0.95,
    i.e. stuck shut or open (an LSTM forget gate near 1 is the memory working; a reset gate stuck at 0 cuts
    the past off). RNN (``tanh``): the share of hidden units with |tanh| > 0.97, where the gradient through
    tanh nearly vanishes (makemore's threshold).
    """
    _, recorded = model.apply(_stateful_vars(model, variables), x, mutable=[GATES])
    out = {}
    for layer, gates in recorded[GATES]["rnn"].items():
        for name, (a,) in gates.items():
            saturated = jnp.abs(a) > TANH_SATURATED if name == "tanh" else (a < GATE_LOW) | (a > GATE_HIGH)
            out[f"{layer}/{name}"] = saturated.mean()
    return out


@functools.partial(jax.jit, static_argnames="model")
def next_carry(model: StatefulCharRnn, variables: Variables, x: jax.Array):
    """The hidden state of ``model`` after the batch ``x``, from the one in ``variables`` (eval mode)."""
    return model.apply(variables, x, mutable=[CARRY])[1][CARRY]["h"]


def carried_diagnostics(model: StatefulCharRnn, params: Variables, ds: ArrayDataset, n_batches: int = 8,
                        warmup: int = 0) -> dict:
    """For ``model`` with ``params``: mean ‖∂L/∂h_t‖ (per layer, per step of the window) and gate saturation
    over ``n_batches`` consecutive batches of ``ds`` (a :func:`~jaxlearn.text.data.stream_batches` set), the
    hidden state carried from one to the next as in training. The first ``warmup`` batches only carry the
    state on (a zero state is not what a trained model usually sees); a set too short for them is measured from
    its first batch.

    Returns ``{'grad_norms': (n_layers, T) nested lists, 'gate_saturation': {'layer_<l>/<gate>': fraction}}``.
    """
    bs = ds.batch_size
    h = model.zero_state(bs)
    norms, saturation = [], []
    for i in range(min(warmup + n_batches, ds.n_batches)):
        x, y = ds.x[i * bs:(i + 1) * bs], ds.y[i * bs:(i + 1) * bs]
        variables = {"params": params, CARRY: {"h": h}}
        if i >= warmup or ds.n_batches <= warmup:
            norms.append(hidden_grad_norms(model, variables, x, y))
            saturation.append(gate_saturation(model, variables, x))
        h = next_carry(model, variables, x)
    return {"grad_norms": np.mean(jax.device_get(norms), axis=0).tolist(),
            "gate_saturation": {k: float(np.mean([s[k] for s in saturation])) for k in saturation[0]}}
