"""Generating text from any of the lessons' character models (lesson 7's sampling), compiled with ``lax.scan``."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn.step import CARRY
from jaxlearn.text.data import CharVocab
from jaxlearn.text.models import WINDOW, Char3Model, CharSeqRnn, StatefulCharRnn, Variables


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
    """``n_chars`` characters drawn from ``model`` with ``variables`` after ``prefix`` (which is not included in
    the result), encoded and decoded with ``vocab``.

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

