"""The lecture's training, on jaxlearn's one core: SGD at lr 0.1 → 0.01 after 100,000 steps, batches of 32
drawn with replacement, 10,000 steps per compiled call; its init and parameter count; sampling names.

Scoring a split is ``learn.evaluate(dataset)`` (eval mode: BatchNorm uses its running statistics), and
"calibrate the batch norm at the end of training" is :func:`jaxlearn.nn.calibrate_batchnorm`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlearn import optim
from jaxlearn.callback import Callback
from jaxlearn.callbacks.monitor import SmoothedLossCB
from jaxlearn.data import DataLoaders
from jaxlearn.learner import Learner
from jaxlearn.losses import cross_entropy
from jaxlearn.makemore.models import BLOCK_SIZE, LECTURE_SEED


def init(model: nn.Module, seed: int | jax.Array = LECTURE_SEED, block_size: int | None = None) -> dict:
    """``{'params': ..., 'batch_stats': ...}`` from the model's explicit inits (``batch_stats`` may be empty),
    drawn from ``seed`` (an int or a PRNG key) on inputs of ``block_size`` characters (default: the model's)."""
    key = jax.random.key(seed) if isinstance(seed, int) else seed
    bs = block_size or getattr(model, "block_size", BLOCK_SIZE)
    variables = model.init(key, jnp.zeros((2, bs), jnp.int32))  # eager: cheaper than compiling an init
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def count_params(variables_or_params: Mapping) -> int:
    """Number of trainable scalars in ``variables_or_params`` (a model's variables or its params alone;
    ``batch_stats`` buffers are not parameters, as in the lecture)."""
    params = variables_or_params.get("params", variables_or_params)
    return int(sum(np.size(p) for p in jax.tree.leaves(params)))


def lecture_lr(step: jax.Array, lr: float = 0.1, decay_step: int = 100_000, decay_to: float = 0.01) -> jax.Array:
    """The lecture's learning rate at ``step``: ``lr = 0.1 if i < 100000 else 0.01`` (``lr`` before
    ``decay_step``, ``decay_to`` from it on)."""
    return jnp.where(step < decay_step, jnp.float32(lr), jnp.float32(decay_to))


def mean_cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """``F.cross_entropy(logits, y)``: the mean of the core's per-example cross-entropy."""
    return cross_entropy(logits, y).mean()


# XLA:CPU's YNNPACK library calls cost more than they save on matrices this small (batch 32 × 200 hidden):
# without them the lecture's step took 51.7 instead of 59.5 CPU-µs (alternating blocks in one process).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
"""XLA options for the lecture's small CPU steps (``Learner(..., compiler_options=...)``): YNNPACK fusions off."""


def lecture_learner(model: nn.Module, dls: DataLoaders, seed: int = LECTURE_SEED, steps_per_call: int = 10_000,
                    optimizer: Callable[..., optax.GradientTransformation] | None = None,
                    callbacks: Sequence[Callback] = ()) -> Learner:
    """The lecture's training setup for ``model`` on jaxlearn's one core: SGD with :func:`lecture_lr` (0.1 →
    0.01 at step 100,000, counted by the optimizer so it carries across fits), cross-entropy, ``steps_per_call``
    steps per compiled call (a ``lax.scan``). ``dls`` from ``names_loaders(32, batches_per_epoch=...)`` draws each batch
    with replacement, like the lecture's ``torch.randint``. On the CPU the calls compile with
    :data:`CPU_COMPILER_OPTIONS`.

    The schedule is built into the transform (``optim.sgd(lecture_lr)``) rather than injected
    (``inject_hyperparams`` of a schedule cost 64 vs 46 CPU-µs per step here). ``optimizer`` replaces it;
    ``seed`` seeds the Learner; ``callbacks`` join every fit."""
    return Learner(model, dls, optimizer=optimizer or optim.sgd(lecture_lr),
                   metrics=[], seed=seed, steps_per_call=steps_per_call, callbacks=callbacks,
                   compiler_options=CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None)


def train(learn: Learner, steps: int) -> np.ndarray:
    """Train ``steps`` steps (whole epochs of ``learn.dls.train``) without validation passes; returns every
    step's training loss."""
    per_epoch = learn.dls.train.n_batches
    if steps % per_epoch:
        raise ValueError(f"steps ({steps}) must be a multiple of the batches per epoch ({per_epoch})")
    losses = SmoothedLossCB()
    learn.fit(steps // per_epoch, valid=False, callbacks=[losses])
    return losses.raw


def variables_of(learn: Learner) -> dict:
    """``{'params': ..., 'batch_stats': ...}`` of the model of the Learner ``learn`` (``batch_stats`` may be
    empty)."""
    return {"params": learn.state.params, "batch_stats": learn.state.model_state.get("batch_stats", {})}


@functools.partial(jax.jit, static_argnames=("model", "n", "max_len", "block_size"))
def _sample_ids(model, variables, key, n: int, max_len: int, block_size: int):
    def body(carry, k):
        context, done = carry
        logits = model.apply(variables, context, train=False)
        ix = jax.random.categorical(k, logits).astype(jnp.int32)
        ix = jnp.where(done, 0, ix)
        context = jnp.concatenate([context[:, 1:], ix[:, None]], axis=1)
        return (context, done | (ix == 0)), ix
    init_carry = (jnp.zeros((n, block_size), jnp.int32), jnp.zeros((n,), bool))
    _, ids = jax.lax.scan(body, init_carry, jax.random.split(key, max_len))
    return ids.T


def sample(model: nn.Module, variables: Mapping, vocab, n: int = 20, seed: int | jax.Array = LECTURE_SEED + 10,
           max_len: int = 50) -> list[str]:
    """``n`` names sampled from ``model`` with ``variables`` in eval mode, each stopped at its first '.' and
    decoded with ``vocab`` (deterministic per ``seed``).

    All ``n`` names are drawn in parallel in one compiled ``lax.scan``; a name still going after ``max_len``
    characters is cut there.
    """
    key = jax.random.key(seed) if isinstance(seed, int) else seed
    bs = getattr(model, "block_size", BLOCK_SIZE)
    v = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    ids = np.asarray(_sample_ids(model, v, key, n, max_len, bs))
    names = []
    for row in ids:
        row = list(row)
        row = row[:row.index(0)] if 0 in row else row
        names.append(vocab.decode(row))
    return names

