"""The recurrent cells of fast.ai 2018 lesson 7, written from the lesson's equations, each equal to its flax
counterpart (same parameter tree, same init, same outputs): :class:`RNNCell` (``flax.linen.SimpleCell``),
:class:`GRUCell` (``flax.linen.GRUCell``), :class:`LSTMCell` (``flax.linen.LSTMCell``); and
:func:`fusion_fence`, which keeps XLA from recomputing a cheap state chain in every step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

GATES = "gates"  # the cells' gate activations, recorded only when this collection is mutable (gate_saturation)

_lecun = nn.initializers.lecun_normal()  # flax's recurrent cells' defaults
_orthogonal = nn.initializers.orthogonal()
_zeros = nn.initializers.zeros_init()


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
        """The starting h: zeros for inputs of ``input_shape`` (batch dims + features; ``rng`` unused)."""
        return jnp.zeros(input_shape[:-1] + (self.features,))

    @property
    def num_feature_axes(self) -> int:
        return 1


class RNNCell(_HiddenStateCell):
    """The lesson's RNN cell (PyTorch's ``RNNCell``, which sums input and hidden), equal to flax's SimpleCell:

    ``h' = tanh(W_i x + b_i + W_h h)``. Parameters ``i`` (kernel, bias) and ``h`` (kernel). Carry: h.

    ``features`` is the size of h; ``kernel_init``, ``recurrent_kernel_init`` and ``bias_init`` initialize the
    input kernels, the recurrent kernels and the biases (flax's defaults: LeCun normal, orthogonal, zeros).
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
    ``h̃ = tanh(in(x) + hn(r ⊙ h))``. Carry: h. ``features``, ``kernel_init``, ``recurrent_kernel_init`` and
    ``bias_init`` as :class:`RNNCell`'s.
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
    ``ig`` / ``hg``). Carry: ``(c, h)``, flax's order. ``features``, ``kernel_init``, ``recurrent_kernel_init``
    and ``bias_init`` as :class:`RNNCell`'s.
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
        """The starting ``(c, h)``: zeros for inputs of ``input_shape`` (batch dims + features; ``rng`` unused)."""
        shape = input_shape[:-1] + (self.features,)
        return jnp.zeros(shape), jnp.zeros(shape)

    @property
    def num_feature_axes(self) -> int:
        return 1


CELLS: dict[str, type[nn.RNNCellBase]] = {"rnn": RNNCell, "gru": GRUCell, "lstm": LSTMCell}
"""The cells by name, as the models take them (``StatefulCharRnn(cell='lstm')``)."""

