"""Character RNNs of fast.ai 2018 lessons 6–7 in flax.linen: from three characters to a stateful LSTM.

Every model takes ``(x, train=False)`` with ``x`` int32 character ids and returns logits, trained with the
core's :func:`~jaxlearn.losses.cross_entropy` (a sequence's per-step losses averaged per example); the data
comes from :mod:`jaxlearn.text.data`. Notation: ``e`` the embedding (``n_fac`` = 42 factors), ``h`` the hidden state
(``n_hidden`` = 256), ``l_in`` / ``l_hidden`` / ``l_out`` the lesson's three shared linear layers.

* :class:`Char3Model` (lesson 6): 3 chars → the 4th; ``in_k = relu(l_in(e(c_k)))``,
  ``h = tanh(l_hidden(h + in_k))`` three times from ``h = 0``, logits ``l_out(h)``.
* :class:`CharLoopModel`: the same as a loop over 8 chars; ``concat=True`` feeds ``[h, e(c)]`` into ``l_in``
  instead of adding (the lesson: 1.72 → 1.66).
* :class:`CharRnn`: the same through flax's RNN API, ``nn.RNN(nn.SimpleCell)``, h0 = 0, last output kept.
* :class:`CharSeqRnn`: an output at every step, (B, T, V); ``identity_init=True`` sets ``W_hh = I``
  (Le, Jaitly & Hinton 2015; the lesson's usable lr rose from 1e-3 to 1e-2).
* :class:`StatefulCharRnn` (lesson 7): an RNN / GRU / LSTM stack of the cells of :mod:`jaxlearn.text.cells`;
  the hidden state lives in the ``"carry"`` collection and is carried from one batch of
  :func:`jaxlearn.text.data.stream_batches` to the next, with the gradient cut at the batch boundary
  (``jax.lax.stop_gradient``, the lesson's ``repackage_var``): backprop covers only ``bptt`` steps.

What they do inside: :mod:`jaxlearn.text.diagnostics`; generating text: :mod:`jaxlearn.text.sampling`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlearn.step import CARRY
from jaxlearn.text.cells import CELLS, GATES, fusion_fence
from jaxlearn.trees import PERTURBATIONS

CELL_KINDS = ("rnn", "gru", "lstm")
"""The ``cell`` names :class:`StatefulCharRnn` takes (:data:`jaxlearn.text.cells.CELLS`)."""
WINDOW = 8  # the lessons' context length (CharLoopModel, CharRnn, bptt)
"""The lessons' context length: :class:`CharLoopModel`'s and :class:`CharRnn`'s characters, the bptt window."""

Carry = Any  # a cell's state: h, or (c, h) for the LSTM; StatefulCharRnn: a tuple of those, one per layer
Variables = Mapping[str, Any]

_orthogonal = nn.initializers.orthogonal()


def identity_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """``W_hh = I`` (Le, Jaitly & Hinton 2015; lesson 6's ``m.rnn.weight_hh_l0.data.copy_(torch.eye(n_hidden))``):
    at init the hidden state is carried over unchanged, so gradients neither vanish nor explode through it. A
    flax initializer: the identity of ``shape`` in ``dtype`` (``key`` unused)."""
    del key
    return jnp.eye(*shape, dtype=dtype)


class Char3Model(nn.Module):
    """Lesson 6: three characters → the fourth, one set of weights shared by the three steps.

    ``in_k = relu(l_in(e(c_k)))``; ``h = 0``; ``h = tanh(l_hidden(h + in_k))`` for k = 1, 2, 3; logits
    ``l_out(h)``. x (B, 3) → (B, vocab_size). ``vocab_size`` characters, embedded in ``n_fac`` factors;
    ``n_hidden`` hidden units.
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
    x (B, T) → (B, vocab_size). ``vocab_size``, ``n_fac`` and ``n_hidden`` as :class:`Char3Model`'s.
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
    ``flax.linen.RNN(flax.linen.SimpleCell)``; logits from the last output only. x (B, T) → (B, vocab_size).
    ``vocab_size``, ``n_fac`` and ``n_hidden`` as :class:`Char3Model`'s."""
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
    :func:`~jaxlearn.losses.cross_entropy`; h is still reset to 0 for each sequence. ``identity_init=True`` makes the
    hidden-to-hidden weight the identity (:func:`identity_init`). :meth:`step` runs one character from a
    given state (used by :func:`sample_text`). ``vocab_size``, ``n_fac`` and ``n_hidden`` as
    :class:`Char3Model`'s.
    """
    vocab_size: int
    n_fac: int = 42
    n_hidden: int = 256
    identity_init: bool = False

    def setup(self):
        """The layers: embedding ``e``, the RNN over flax's SimpleCell, the output layer ``l_out``."""
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
        """The initial h: zeros, (batch, n_hidden)."""
        return jnp.zeros((batch, self.n_hidden))


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
    recurrent_init: Callable | None = None

    @nn.compact
    def __call__(self, carry: tuple[Carry, ...], x: jax.Array) -> tuple[tuple[Carry, ...], jax.Array]:
        new_carry = []
        init = {} if self.recurrent_init is None else {"recurrent_kernel_init": self.recurrent_init}
        for layer in range(self.n_layers):
            if layer > 0:
                x = nn.Dropout(self.dropout, deterministic=self.deterministic)(x)
            state, x = CELLS[self.cell](self.n_hidden, name=f"layer_{layer}", **init)(carry[layer], x)
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
    the lesson: 2-layer LSTM, 512 hidden, dropout 0.5). ``cell`` is one of :data:`CELL_KINDS`, stacked
    ``n_layers`` deep; ``vocab_size``, ``n_fac`` and ``n_hidden`` as :class:`Char3Model`'s; ``recurrent_init``
    initializes the cells' hidden-to-hidden weights (default: flax's orthogonal; :func:`identity_init`).

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
    recurrent_init: Callable | None = None  # the cells' hidden-to-hidden init (default: flax's orthogonal)

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
        h_final, out = stack(self.cell, self.n_hidden, self.n_layers, self.dropout, deterministic=not train,
                             recurrent_init=self.recurrent_init, name="rnn")(h0, emb)
        if carry is not None and self.is_mutable_collection(CARRY) and not self.is_initializing():
            carry.value = jax.lax.stop_gradient(h_final)
        return nn.Dense(self.vocab_size, name="l_out")(out)

    @nn.nowrap
    def zero_state(self, batch: int) -> tuple[Carry, ...]:
        """The initial carry for ``batch`` sequences: zeros, one entry per layer (``(c, h)`` for the LSTM)."""
        def zeros():
            return jnp.zeros((batch, self.n_hidden))
        return tuple((zeros(), zeros()) if self.cell == "lstm" else zeros() for _ in range(self.n_layers))


