"""Character RNNs of fast.ai 2018 lessons 6–7 in flax.linen: from three characters to a stateful LSTM.

Every model takes ``(x, train=False)`` with ``x`` int32 character ids and returns logits; the data comes
from :mod:`jaxlearn.text`. Notation: ``e`` the embedding (``n_fac`` = 42 factors), ``h`` the hidden state
(``n_hidden`` = 256), ``l_in`` / ``l_hidden`` / ``l_out`` the lesson's three shared linear layers.

* :class:`Char3Model` (lesson 6): 3 chars → the 4th; ``in_k = relu(l_in(e(c_k)))``,
  ``h = tanh(l_hidden(h + in_k))`` three times from ``h = 0``, logits ``l_out(h)``.
* :class:`CharLoopModel`: the same as a loop over 8 chars; ``concat=True`` feeds ``[h, e(c)]`` into ``l_in``
  instead of adding (the lesson: 1.72 → 1.66).
* :class:`CharRnn`: the same through flax's RNN API, ``nn.RNN(nn.SimpleCell)``, h0 = 0, last output kept.
* :class:`CharSeqRnn`: an output at every step, (B, T, V); ``identity_init=True`` sets ``W_hh = I``
  (Le, Jaitly & Hinton 2015; the lesson's usable lr rose from 1e-3 to 1e-2).
* Cells written from the lesson's equations, each equal to its flax counterpart (same parameter tree, same
  init, same outputs): :class:`RNNCell` (``flax.linen.SimpleCell``), :class:`GRUCell`
  (``flax.linen.GRUCell``), :class:`LSTMCell` (``flax.linen.LSTMCell``).
* :class:`StatefulCharRnn` (lesson 7): the hidden state lives in the ``"carry"`` collection and is carried
  from one batch of :func:`jaxlearn.text.stream_batches` to the next, with the gradient cut at the batch
  boundary (``jax.lax.stop_gradient``, the lesson's ``repackage_var``): backprop covers only ``bptt`` steps.
* :func:`sequence_cross_entropy`: one loss per example, the mean over time (the Learner's per-example loss).
* Beyond the lesson, reduced on the device: :func:`hidden_grad_norms` (‖∂L/∂h_t‖ for every step of the bptt
  window: how far back the gradient reaches) and :func:`gate_saturation` (how many gates are stuck open or
  shut, or for the plain RNN how many tanh units are saturated).
* :func:`sample_text`: generate characters from any of the models, compiled with ``lax.scan``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlearn.text import CharVocab

CARRY = "carry"  # the collection the Learner threads from batch to batch (StatefulCharRnn's hidden state)
GATES = "gates"  # the cells' gate activations, recorded only when this collection is mutable (gate_saturation)
PERTURBATIONS = "perturbations"  # zero additions to the hidden states, for ∂L/∂h_t (hidden_grad_norms)
CELL_KINDS = ("rnn", "gru", "lstm")
WINDOW = 8  # the lessons' context length (CharLoopModel, CharRnn, bptt)
GATE_LOW, GATE_HIGH = 0.05, 0.95  # a sigmoid gate outside (0.05, 0.95) counts as saturated
TANH_SATURATED = 0.97  # makemore's |tanh| > 0.97

Carry = Any  # a cell's state: h, or (c, h) for the LSTM; StatefulCharRnn: a tuple of those, one per layer
Variables = Mapping[str, Any]

_lecun = nn.initializers.lecun_normal()  # flax's recurrent cells' defaults
_orthogonal = nn.initializers.orthogonal()
_zeros = nn.initializers.zeros_init()


def identity_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """``W_hh = I`` (Le, Jaitly & Hinton 2015; lesson 6's ``m.rnn.weight_hh_l0.data.copy_(torch.eye(n_hidden))``):
    at init the hidden state is carried over unchanged, so gradients neither vanish nor explode through it."""
    del key
    return jnp.eye(*shape, dtype=dtype)


# ------------------------------------------------------------------------------------- lesson 6 models

class Char3Model(nn.Module):
    """Lesson 6: three characters → the fourth, one set of weights shared by the three steps.

    ``in_k = relu(l_in(e(c_k)))``; ``h = 0``; ``h = tanh(l_hidden(h + in_k))`` for k = 1, 2, 3; logits
    ``l_out(h)``. x (B, 3) → (B, vocab_size).
    """
    vocab_size: int
    n_fac: int = 42
    n_hidden: int = 256

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.shape[-1] != 3:
            raise ValueError(f"Char3Model reads 3 characters, got x of shape {x.shape}")
        e = nn.Embed(self.vocab_size, self.n_fac, name="e")
        l_in = nn.Dense(self.n_hidden, name="l_in")
        l_hidden = nn.Dense(self.n_hidden, name="l_hidden")
        in1, in2, in3 = (nn.relu(l_in(e(x[:, k]))) for k in range(3))
        h = jnp.zeros_like(in1)
        h = jnp.tanh(l_hidden(h + in1))
        h = jnp.tanh(l_hidden(h + in2))
        h = jnp.tanh(l_hidden(h + in3))
        return nn.Dense(self.vocab_size, name="l_out")(h)


class CharLoopModel(nn.Module):
    """Lesson 6: Char3Model as a loop over any number of characters (the lesson: 8 overlapping ones).

    ``concat=False``: ``h = tanh(l_hidden(h + relu(l_in(e(c)))))``.
    ``concat=True``: ``h = tanh(l_hidden(relu(l_in([h, e(c)]))))`` — the input and the hidden state are
    different kinds of thing, so concatenate rather than add (``l_in``: n_hidden + n_fac → n_hidden).
    x (B, T) → (B, vocab_size).
    """
    vocab_size: int
    n_fac: int = 42
    n_hidden: int = 256
    concat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        e = nn.Embed(self.vocab_size, self.n_fac, name="e")
        l_in = nn.Dense(self.n_hidden, name="l_in")
        l_hidden = nn.Dense(self.n_hidden, name="l_hidden")
        h = jnp.zeros((x.shape[0], self.n_hidden))
        for t in range(x.shape[1]):
            if self.concat:
                h = jnp.tanh(l_hidden(nn.relu(l_in(jnp.concatenate([h, e(x[:, t])], axis=-1)))))
            else:
                h = jnp.tanh(l_hidden(h + nn.relu(l_in(e(x[:, t])))))
        return nn.Dense(self.vocab_size, name="l_out")(h)


class CharRnn(nn.Module):
    """Lesson 6's ``nn.RNN`` model: ``h_t = tanh(W_i e(c_t) + b + W_h h_{t-1})`` from ``h_0 = 0`` through
    ``flax.linen.RNN(flax.linen.SimpleCell)``; logits from the last output only. x (B, T) → (B, vocab_size)."""
    vocab_size: int
    n_fac: int = 42
    n_hidden: int = 256

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cell = nn.SimpleCell(self.n_hidden, parent=None)  # unbound: it becomes the RNN's child, rnn/cell
        out = nn.RNN(cell, name="rnn")(nn.Embed(self.vocab_size, self.n_fac, name="e")(x))
        return nn.Dense(self.vocab_size, name="l_out")(out[:, -1])


class CharSeqRnn(nn.Module):
    """Lesson 6's multi-output model: the RNN's output at every step → logits (B, T, vocab_size).

    Trained on :func:`jaxlearn.text.char_sequences` (targets = inputs shifted by one) with
    :func:`sequence_cross_entropy`; h is still reset to 0 for each sequence. ``identity_init=True`` makes the
    hidden-to-hidden weight the identity (:func:`identity_init`). :meth:`step` runs one character from a
    given state (used by :func:`sample_text`).
    """
    vocab_size: int
    n_fac: int = 42
    n_hidden: int = 256
    identity_init: bool = False

    def setup(self):
        self.e = nn.Embed(self.vocab_size, self.n_fac)
        cell = nn.SimpleCell(self.n_hidden, recurrent_kernel_init=identity_init if self.identity_init
                             else _orthogonal)
        self.rnn = nn.RNN(cell, return_carry=True)
        self.l_out = nn.Dense(self.vocab_size)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _, out = self.rnn(self.e(x))
        return self.l_out(out)

    def step(self, h: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One character ``c`` (B,) from hidden state ``h`` (B, n_hidden) → (new h, logits (B, V))."""
        h, out = self.rnn(self.e(c[:, None]), initial_carry=h)
        return h, self.l_out(out[:, 0])

    @nn.nowrap
    def zero_state(self, batch: int) -> jax.Array:
        return jnp.zeros((batch, self.n_hidden))


# ---------------------------------------------------------------------------------------------- cells

def fusion_fence(x: jax.Array) -> jax.Array:
    """``x`` unchanged (exactly: ``x / 1``), but computed once by XLA instead of inside every consumer.

    Why: unrolled over the bptt window, a state updated by cheap elementwise ops alone — the LSTM's
    ``c' = f ⊙ c + i ⊙ g``, the GRU's ``h' = (1 − z) ⊙ h + z ⊙ h̃`` — forms a chain through all the time steps,
    forward and backward, and XLA's fusion copies cheap producers into each consumer: every step recomputes the
    chain from the window's start. A division counts as expensive, so XLA does not copy it; the 1 comes
    through ``optimization_barrier`` so that it is not folded away. The gradient is ``g / 1``: the same fence
    backward. Measured on a 2-core CPU, the lesson's 2 × 512 LSTM training step: 69 → 61 ms.

    :class:`StatefulCharRnn` also fences its parameters on their way into the loop over the window: their
    gradients, sums over the window's steps, are then added up once instead of inside each optimizer update
    that reads them (Adam's two moments): 58 → 56 ms.
    """
    return x / jax.lax.optimization_barrier(jnp.ones((), x.dtype))


def _record(module: nn.Module, **activations: jax.Array) -> None:
    """Sow gate activations into :data:`GATES` when an apply asked for it (``mutable=['gates']``); never at
    init, so the collection never joins a model's variables."""
    if not module.is_initializing():
        for name, value in activations.items():
            module.sow(GATES, name, value)


class _HiddenStateCell(nn.RNNCellBase):
    """A cell whose carry is its hidden state h alone (zeros to start), like flax's ``SimpleCell`` and ``GRUCell``."""

    @nn.nowrap
    def initialize_carry(self, rng: jax.Array, input_shape: tuple[int, ...]) -> jax.Array:
        return jnp.zeros(input_shape[:-1] + (self.features,))

    @property
    def num_feature_axes(self) -> int:
        return 1


class RNNCell(_HiddenStateCell):
    """The lesson's RNN cell (PyTorch's ``RNNCell``, which sums input and hidden), equal to flax's SimpleCell:

    ``h' = tanh(W_i x + b_i + W_h h)``. Parameters ``i`` (kernel, bias) and ``h`` (kernel). Carry: h.
    """
    features: int
    kernel_init: Callable = _lecun
    recurrent_kernel_init: Callable = _orthogonal
    bias_init: Callable = _zeros

    @nn.compact
    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = carry
        w_i = nn.Dense(self.features, kernel_init=self.kernel_init, bias_init=self.bias_init, name="i")
        w_h = nn.Dense(self.features, use_bias=False, kernel_init=self.recurrent_kernel_init, name="h")
        new_h = jnp.tanh(w_i(inputs) + w_h(h))
        _record(self, tanh=new_h)
        return new_h, new_h


class GRUCell(_HiddenStateCell):
    """Lesson 7's GRU, equal to ``flax.linen.GRUCell`` for the same parameters::

        r  = σ(W_r [h, x])                    reset gate
        z  = σ(W_z [h, x])                    update gate
        h̃  = tanh(W x + U (r ⊙ h))            candidate
        h' = (1 − z) ⊙ h + z ⊙ h̃

    ``W_r [h, x]`` is ``ir(x) + hr(h)`` (Dense layers named as flax names them; ``ir``, ``iz``, ``in`` and
    ``hn`` have biases). flax (like PyTorch and cuDNN) parameterizes the other side of the update gate,
    ``1 − z = σ(iz(x) + hz(h))``, the share of h *kept*; the same parameters give the same h'.
    ``reset_after=True`` (flax, PyTorch, cuDNN) applies the reset gate after the recurrent matrix,
    ``h̃ = tanh(in(x) + r ⊙ hn(h))``; ``reset_after=False`` is the lesson's (Cho et al. 2014)
    ``h̃ = tanh(in(x) + hn(r ⊙ h))``. Carry: h.
    """
    features: int
    reset_after: bool = True
    kernel_init: Callable = _lecun
    recurrent_kernel_init: Callable = _orthogonal
    bias_init: Callable = _zeros

    @nn.compact
    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        h, x = carry, inputs
        dense_i = functools.partial(nn.Dense, self.features, kernel_init=self.kernel_init,
                                    bias_init=self.bias_init)
        dense_h = functools.partial(nn.Dense, self.features, use_bias=False,
                                    kernel_init=self.recurrent_kernel_init)
        r = jax.nn.sigmoid(dense_i(name="ir")(x) + dense_h(name="hr")(h))
        z = 1.0 - jax.nn.sigmoid(dense_i(name="iz")(x) + dense_h(name="hz")(h))
        u = dense_h(name="hn", use_bias=True, bias_init=self.bias_init)
        h_tilde = jnp.tanh(dense_i(name="in")(x) + (r * u(h) if self.reset_after else u(r * h)))
        new_h = fusion_fence((1.0 - z) * h + z * h_tilde)
        _record(self, r=r, z=z)
        return new_h, new_h


class LSTMCell(nn.RNNCellBase):
    """Lesson 7's LSTM, equal to ``flax.linen.LSTMCell`` for the same parameters::

        i  = σ(W_i [h, x])          input gate
        f  = σ(W_f [h, x])          forget gate
        o  = σ(W_o [h, x])          output gate
        c' = f ⊙ c + i ⊙ tanh(W_c [h, x])
        h' = o ⊙ tanh(c')

    ``W_i [h, x]`` is ``ii(x) + hi(h)`` (flax's names; only the ``h*`` layers have biases; ``W_c`` is
    ``ig`` / ``hg``). Carry: ``(c, h)``, flax's order.
    """
    features: int
    kernel_init: Callable = _lecun
    recurrent_kernel_init: Callable = _orthogonal
    bias_init: Callable = _zeros

    @nn.compact
    def __call__(self, carry: tuple[jax.Array, jax.Array], inputs: jax.Array
                 ) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        c, h = carry
        x = inputs

        def w(gate: str) -> jax.Array:  # W_gate [h, x]
            w_x = nn.Dense(self.features, use_bias=False, kernel_init=self.kernel_init, name=f"i{gate}")
            w_h = nn.Dense(self.features, kernel_init=self.recurrent_kernel_init, bias_init=self.bias_init,
                           name=f"h{gate}")
            return w_x(x) + w_h(h)

        i = jax.nn.sigmoid(w("i"))
        f = jax.nn.sigmoid(w("f"))
        g = jnp.tanh(w("g"))
        o = jax.nn.sigmoid(w("o"))
        new_c = fusion_fence(f * c + i * g)
        new_h = o * jnp.tanh(new_c)
        _record(self, i=i, f=f, o=o)
        return (new_c, new_h), new_h

    @nn.nowrap
    def initialize_carry(self, rng: jax.Array, input_shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
        shape = input_shape[:-1] + (self.features,)
        return jnp.zeros(shape), jnp.zeros(shape)

    @property
    def num_feature_axes(self) -> int:
        return 1


CELLS: dict[str, type[nn.RNNCellBase]] = {"rnn": RNNCell, "gru": GRUCell, "lstm": LSTMCell}


# ------------------------------------------------------------------------------------- lesson 7 model

class _StackStep(nn.Module):
    """One time step through ``n_layers`` cells (dropout between layers, as ``nn.LSTM(dropout=…)``).

    Each layer's new h gets a zero perturbation named ``h_<layer>`` (outside init), so the gradient with
    respect to it is ∂L/∂h_t, through the rest of the window included.
    """
    cell: str
    n_hidden: int
    n_layers: int
    dropout: float
    deterministic: bool

    @nn.compact
    def __call__(self, carry: tuple[Carry, ...], x: jax.Array) -> tuple[tuple[Carry, ...], jax.Array]:
        new_carry = []
        for layer in range(self.n_layers):
            if layer > 0:
                x = nn.Dropout(self.dropout, deterministic=self.deterministic)(x)
            state, x = CELLS[self.cell](self.n_hidden, name=f"layer_{layer}")(carry[layer], x)
            if not self.is_initializing():
                x = self.perturb(f"h_{layer}", x)
                state = (state[0], x) if self.cell == "lstm" else x
            new_carry.append(state)
        return tuple(new_carry), x


@functools.cache
def _scan_stack(unroll: int) -> type[nn.Module]:
    """The step scanned over time (axis 1 of the (B, T, n_fac) embeddings): shared params, a fresh dropout mask
    per step; recorded gates, perturbations and captured intermediates are stacked with time first, (T, B, ...).
    ``unroll`` steps per loop iteration (``lax.scan``'s)."""
    return nn.scan(_StackStep, variable_broadcast="params", split_rngs={"params": False, "dropout": True},
                   variable_axes={GATES: 0, PERTURBATIONS: 0, "intermediates": 0}, in_axes=1, out_axes=1,
                   unroll=unroll)


class StatefulCharRnn(nn.Module):
    """Lesson 7's stateful RNN / GRU / LSTM: x (B, T) → logits (B, T, vocab_size), an output at every step.

    The hidden state is the variable ``("carry", "h")``: a tuple with one entry per layer, each h (B, n_hidden)
    or, for the LSTM, ``(c, h)``. It starts as zeros (batch = ``x.shape[0]``; also whenever the batch size
    changes, as the lesson's ``init_hidden``); a call reads it as the initial state, runs the bptt window and,
    when ``"carry"`` is mutable (``apply(..., mutable=["carry"])``, the Learner's train step), stores
    ``jax.lax.stop_gradient`` of the final state: the next batch continues from it, but backprop stops at the
    batch boundary (the lesson's ``repackage_var``). A plain ``apply`` reads the carry without changing it, or
    starts from zeros when the variables hold no carry. ``dropout`` acts between layers (``nn.LSTM(dropout)``;
    the lesson: 2-layer LSTM, 512 hidden, dropout 0.5).

    ``unroll``: time steps per iteration of the loop over the window, a speed setting only (the same function;
    floats may round differently). Unrolled, XLA can overlap a layer's step with its neighbours'. Measured on a
    2-core CPU, with :func:`fusion_fence` in the cells: the lesson's 2 × 512 LSTM at bptt 8 unrolled 8 (the
    whole window) 58 ms a step, against 67 ms unrolled 1; a 2 × 384 LSTM at bptt 16 unrolled 16: 71 ms, against 84
    unrolled 1 and 75 unrolled 8. (Before the fence, the 2 × 384 LSTM was 13% slower unrolled.) Measure before
    choosing.
    """
    vocab_size: int
    cell: str = "rnn"
    n_fac: int = 42
    n_hidden: int = 256
    n_layers: int = 1
    dropout: float = 0.0
    unroll: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if not isinstance(self.unroll, int) or self.unroll < 1:
            raise ValueError(f"unroll must be a positive integer, got {self.unroll!r}")
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}: expected one of {', '.join(map(repr, CELLS))}")
        batch = x.shape[0]
        carry = (self.variable(CARRY, "h", self.zero_state, batch)
                 if self.has_variable(CARRY, "h") or self.is_mutable_collection(CARRY) else None)
        h0 = self.zero_state(batch) if carry is None else carry.value
        if jax.tree.leaves(h0)[0].shape[0] != batch:
            h0 = self.zero_state(batch)
        emb = nn.Embed(self.vocab_size, self.n_fac, name="e")(x)
        stack = nn.map_variables(_scan_stack(self.unroll), "params", init=self.is_initializing(),
                                 trans_in_fn=lambda p: jax.tree.map(fusion_fence, p))  # see fusion_fence
        h_final, out = stack(self.cell, self.n_hidden, self.n_layers, self.dropout,
                             deterministic=not train, name="rnn")(h0, emb)
        if carry is not None and self.is_mutable_collection(CARRY) and not self.is_initializing():
            carry.value = jax.lax.stop_gradient(h_final)
        return nn.Dense(self.vocab_size, name="l_out")(out)

    @nn.nowrap
    def zero_state(self, batch: int) -> tuple[Carry, ...]:
        """The initial carry: zeros, one entry per layer (``(c, h)`` for the LSTM)."""
        def zeros():
            return jnp.zeros((batch, self.n_hidden))
        return tuple((zeros(), zeros()) if self.cell == "lstm" else zeros() for _ in range(self.n_layers))


# ------------------------------------------------------------------------------------------------ loss

def sequence_cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """One loss per example: cross-entropy averaged over the time axis, shape (B,).

    logits (B, T, V) with y (B, T) → mean over T (the lesson's ``nll_loss_seq`` averages over B·T; the mean
    over B of these is the same number). logits (B, V) with y (B,) → plain per-example cross-entropy.
    """
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return losses.mean(axis=tuple(range(1, losses.ndim)))


# ----------------------------------------------------------------------------------------- diagnostics

def _stateful_vars(model: nn.Module, variables: Variables) -> dict:
    if not isinstance(model, StatefulCharRnn):
        raise TypeError(f"expected a StatefulCharRnn, got {type(model).__name__}")
    return {k: variables[k] for k in ("params", CARRY) if k in variables}


@functools.partial(jax.jit, static_argnames="model")
def hidden_grad_norms(model: StatefulCharRnn, variables: Variables, x: jax.Array, y: jax.Array) -> jax.Array:
    """‖∂L/∂h_t‖ for every step t of the bptt window and every layer: shape (n_layers, T).

    L is the batch's mean :func:`sequence_cross_entropy` (eval mode, starting from the variables' carry);
    h_t is each layer's hidden state at step t, and ∂L/∂h_t includes every path through the later steps of
    the window (a zero perturbation is added to h_t inside the recurrence, flax's ``perturb``). The norm is
    over the batch and hidden units. h_t reaches the losses of steps t … T−1: if the gradient carried back
    through the recurrence vanishes, ‖∂L/∂h_t‖ barely grows from t = T−1 to t = 0 (each state only serves the
    next few outputs); if it explodes, the early steps' norms blow up.
    """
    base = _stateful_vars(model, variables)
    shapes = jax.eval_shape(lambda: model.apply(base, x, mutable=[PERTURBATIONS])[1])
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def loss(perturbations):
        return sequence_cross_entropy(model.apply({**base, **perturbations}, x), y).mean()

    grads = jax.grad(loss)(zeros)[PERTURBATIONS]["rnn"]
    return jnp.stack([jnp.sqrt(jnp.sum(jnp.square(grads[f"h_{layer}"]), axis=(1, 2)))
                      for layer in range(model.n_layers)])


@functools.partial(jax.jit, static_argnames="model")
def gate_saturation(model: StatefulCharRnn, variables: Variables, x: jax.Array) -> dict[str, jax.Array]:
    """Fraction of saturated activations over one batch (eval mode), keyed ``'layer_<l>/<gate>'``.

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


# -------------------------------------------------------------------------------------------- sampling

@functools.partial(jax.jit, static_argnames=("model", "n_chars", "window"))
def _sample_ids(model: nn.Module, variables: Variables, prefix: jax.Array, key: jax.Array,
                temperature: jax.Array, n_chars: int, window: int) -> jax.Array:
    keys = jax.random.split(key, n_chars)

    def draw(k, logits):  # never the padding id 0: it is no character of the text
        return jax.random.categorical(k, logits.at[0].set(-jnp.inf) / temperature).astype(jnp.int32)

    if isinstance(model, (CharSeqRnn, StatefulCharRnn)):  # one character at a time, carrying the state
        if isinstance(model, CharSeqRnn):
            def step(h, c):
                return model.apply(variables, h, c, method=CharSeqRnn.step)
        else:
            def step(h, c):
                logits, new = model.apply({"params": variables["params"], CARRY: {"h": h}}, c[:, None],
                                          mutable=[CARRY])
                return new[CARRY]["h"], logits[:, 0]

        def feed(h, c):
            h, logits = step(h, c[None])
            return h, logits[0]

        h, logits = jax.lax.scan(feed, model.zero_state(1), prefix)

        def body(state, k):
            h, logits = state
            c = draw(k, logits)
            return feed(h, c), c

        return jax.lax.scan(body, (h, logits[-1]), keys)[1]

    context = jnp.concatenate([jnp.zeros(max(window - len(prefix), 0), jnp.int32), prefix])[-window:]

    def slide(context, k):  # window models: the last `window` characters → the next one
        c = draw(k, model.apply(variables, context[None])[0])
        return jnp.concatenate([context[1:], c[None]]), c

    return jax.lax.scan(slide, context, keys)[1]


def sample_text(model: nn.Module, variables: Variables, vocab: CharVocab, prefix: str, n_chars: int,
                temperature: float = 1.0, seed: int | jax.Array = 0, window: int | None = None) -> str:
    """``n_chars`` characters drawn after ``prefix`` (which is not included in the result).

    Each character is drawn from ``softmax(logits / temperature)`` (lesson 7's ``torch.multinomial``;
    temperature < 1 is more conservative), never the padding id 0. :class:`CharSeqRnn` and
    :class:`StatefulCharRnn` read the prefix one character at a time from a zero state and carry their state
    on; the window models
    (:class:`Char3Model`, :class:`CharLoopModel`, :class:`CharRnn`) slide a window over the last ``window``
    characters (3 for Char3Model, else default 8), left-padded with the padding id 0 when the prefix is
    shorter. ``seed`` is an int or a PRNG key. The whole loop is one compiled ``lax.scan``.
    """
    if not prefix:
        raise ValueError("sample_text needs a non-empty prefix")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if window is None:
        window = 3 if isinstance(model, Char3Model) else WINDOW
    key = jax.random.key(seed) if isinstance(seed, int) else seed
    ids = _sample_ids(model, variables, jnp.asarray(vocab.encode(prefix)), key,
                      jnp.float32(temperature), n_chars, window)
    return vocab.decode(np.asarray(ids))
