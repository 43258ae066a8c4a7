"""The compiled core: pure functions from a train state and a batch to a new state and small metrics.

As in flax's ``examples/imagenet/train.py``: :class:`TrainState`, :func:`create_train_state`,
:func:`make_train_step` / :func:`make_eval_step` (one batch), and the compiled calls that the Learner launches,
usable without it:

* :func:`make_train_call` — ``n_steps`` batches (a ``lax.scan``; one step needs no loop) gathered from the
  device-resident dataset by an index matrix, the input transforms, the hyperparameter schedules evaluated
  from the step counter, the metrics summed on the device; the train state's buffers are donated.
* :func:`make_eval_call` — a whole evaluation pass in one call.

Nothing here reads a value back to the host, so the Learner's batch loop only launches these calls.

Carried state: a model may keep a flax collection named ``'carry'`` (an RNN's hidden state). It is threaded
from one batch to the next (train and eval), reset by the caller at each epoch start, and never differentiated
across batches: it enters each step as data, not as a parameter, so backprop stops at the batch boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxlearn.losses import cross_entropy, per_example_loss
from jaxlearn.metrics import AnyMetric, batch_sums
from jaxlearn.optim.hyperparams import set_hyperparams
from jaxlearn.optim.loss_scaling import loss_scale
from jaxlearn.train_flag import train_flag, train_kwargs
from jaxlearn.trees import PERTURBATIONS, PyTree, flatten_intermediates, zero_perturbations

Batch = tuple[PyTree, jax.Array, jax.Array]  # inputs, targets, per-example weight (0 = padding)
Transform = Callable[[PyTree, bool, jax.Array], PyTree]  # (x, training, key) -> x
Schedule = Callable[[jax.Array], jax.Array]  # steps into the fit -> hyperparameter value

CARRY = "carry"  # the collection a model keeps between batches
_TRANSIENT = ("intermediates", PERTURBATIONS)  # collections made afresh by every call, never state
AUGMENT_STREAM = 1  # folded into the step key so augmentation and dropout draw independent numbers
EVAL_SEED = 0  # evaluation transforms see a fixed key: the same inputs give the same predictions


class TrainState(struct.PyTreeNode):
    """Everything a training run carries from step to step; a pytree, so it passes through ``jit``.

    ``step`` counts the training steps; ``params`` are the model's, ``opt_state`` is the optimizer ``tx``'s (an
    optax ``GradientTransformation``); ``model_state`` holds the model's collections other than params
    (``batch_stats``, ``carry``); ``rng`` is a fixed key from which each step derives its own (``fold_in(rng,
    step)``), so dropout and augmentation depend only on the seed and the step number. ``apply_fn`` is the
    model's ``apply``, ``train_flag`` the name of its train flag (:mod:`jaxlearn.train_flag`; ``None``: none).
    """
    step: jax.Array
    params: PyTree
    model_state: PyTree
    opt_state: PyTree
    rng: jax.Array
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    train_flag: str | None = struct.field(pytree_node=False, default="train")  # see jaxlearn.train_flag

    def variables(self, params: PyTree | None = None) -> dict:
        """The model's variables for ``apply``: ``params`` (default: the state's) and the other collections."""
        return {"params": self.params if params is None else params, **self.model_state}

    def apply(self, variables: Mapping, x: PyTree, train: bool, **kwargs) -> Any:
        """``apply_fn(variables, x, **kwargs)`` told whether it trains (``train``) under the name its ``__call__``
        takes (``train``, ``training``, ``deterministic``...; :mod:`jaxlearn.train_flag`), if any."""
        return self.apply_fn(variables, x, **train_kwargs(self.train_flag, train), **kwargs)


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, sample_x: PyTree,
                       seed: int = 0) -> TrainState:
    """Initialize ``model`` on ``sample_x`` (a batch of inputs: a carried state takes its batch size) and
    ``tx`` on its params, with keys from ``seed``. Collections made afresh by every call (``intermediates``,
    ``perturbations``) are not kept."""
    init_key, rng = jax.random.split(jax.random.key(seed))
    flag = train_flag(model)
    variables = dict(model.init({"params": init_key, "dropout": init_key}, sample_x, **train_kwargs(flag, False)))
    params = variables.pop("params")
    model_state = {k: v for k, v in variables.items() if k not in _TRANSIENT}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                      opt_state=tx.init(params), rng=rng, apply_fn=model.apply, tx=tx, train_flag=flag)


@dataclass(frozen=True)
class StepContext:
    """What a callback's ``in_step`` hook sees while the train step is traced (all arrays are traced): the batch
    (``x``, ``y``, per-example ``weight``), the model's ``preds``, its mean ``loss``, the ``grads``, the optimizer's
    ``updates``, ``params`` / ``state`` before the step and ``new_params`` / ``new_state`` after it, and the module
    outputs captured by the callbacks' ``capture`` filters (``intermediates``, by layer path). Hooks must reduce
    what they keep (means, histograms, norms): their outputs leave the device. ``out_grads`` (dL/d each layer's
    output) is filled only when a hook asked for it (``perturb``).
    """
    x: PyTree
    y: jax.Array
    weight: jax.Array
    preds: jax.Array
    loss: jax.Array
    grads: PyTree
    updates: PyTree
    params: PyTree
    new_params: PyTree
    intermediates: dict[str, jax.Array]
    state: TrainState
    new_state: TrainState
    out_grads: dict[str, jax.Array]


def make_train_step(loss_fn: Callable = cross_entropy, metrics: Sequence[AnyMetric] = (),
                    capture: Callable[[nn.Module, str], bool] | None = None,
                    hooks: Mapping[str, Callable[[StepContext], PyTree]] | None = None,
                    perturb: bool = False, compute_dtype: Any = None
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """``train_step(state, (x, y, weight)) -> (state, metrics)``: one pure step, ready for ``jax.jit``.

    The loss is the weighted mean of ``loss_fn``'s per-example losses. ``capture`` selects modules whose
    outputs go to the ``intermediates`` collection; each ``hooks[name](ctx)`` reduces them (or the grads,
    updates, ...) to small arrays returned in ``metrics[name]``. ``perturb`` also differentiates the loss
    with respect to every ``self.perturb``-ed output (``ctx.out_grads``). ``metrics['sums']`` holds the
    weighted loss, count and ``metrics`` sums of the batch. ``compute_dtype`` (e.g. ``jnp.bfloat16``): the
    forward and backward pass run in it (see :func:`cast_floats`); with a :func:`dynamic_loss_scale` optimizer
    the loss is multiplied by its scale before differentiating.
    """
    hooks = dict(hooks or {})

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        x, y, weight = batch
        step_key = jax.random.fold_in(state.rng, state.step)
        mutable = list(state.model_state) + (["intermediates"] if capture else [])

        scale = loss_scale(state.opt_state)

        def loss_of(params, perturbations):
            variables = state.variables(params)
            if perturbations is not None:
                variables = {**variables, "perturbations": perturbations}
            preds, new_vars = state.apply(cast_floats(variables, compute_dtype), cast_floats(x, compute_dtype),
                                          True, rngs={"dropout": step_key}, mutable=mutable,
                                          capture_intermediates=capture or False)
            preds = cast_floats(preds, jnp.float32 if compute_dtype else None)
            losses = per_example_loss(loss_fn, preds, y).astype(jnp.float32)
            loss = (losses * weight).sum() / jnp.maximum(weight.sum(), 1.0)
            return loss * scale, (loss, preds, losses, new_vars)

        perturbations = zero_perturbations(state.apply, state.variables(), x, True, rngs={"dropout": step_key},
                                           mutable=[PERTURBATIONS, *state.model_state]) if perturb else None
        (_, (loss, preds, losses, new_vars)), (grads, out_grads) = jax.value_and_grad(
            loss_of, argnums=(0, 1), has_aux=True)(state.params, perturbations)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_vars = dict(new_vars)
        intermediates = flatten_intermediates(new_vars.pop("intermediates", {}))
        if compute_dtype is not None:  # running statistics and carried state keep their own dtype
            new_vars = jax.tree.map(lambda new, old: new.astype(old.dtype), new_vars, state.model_state)
        new_state = state.replace(step=state.step + 1, params=params, model_state=new_vars, opt_state=opt_state)
        out = {"loss": loss, "sums": batch_sums(metrics, preds, y, losses, weight)}
        if hooks:
            grads, out_grads = jax.tree.map(lambda g: g / scale, (grads, out_grads or {}))  # as if unscaled
            ctx = StepContext(x, y, weight, preds, loss, grads, updates, state.params, params, intermediates,
                              state, new_state, flatten_intermediates(out_grads))
            out.update({name: hook(ctx) for name, hook in hooks.items()})
        return new_state, out

    return train_step


def make_eval_step(loss_fn: Callable = cross_entropy, metrics: Sequence[AnyMetric] = (), compute_dtype: Any = None
                   ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """``eval_step(state, (x, y, weight)) -> (state, sums)``: the weighted sums of ``loss_fn`` and ``metrics``
    in inference mode (running norm statistics; only a carried state changes), the forward pass in
    ``compute_dtype``, the loss and sums in float32."""
    def eval_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        x, y, weight = batch
        preds, carry = inference(state, x, compute_dtype)
        if CARRY in state.model_state:
            state = state.replace(model_state={**state.model_state, CARRY: carry})
        losses = per_example_loss(loss_fn, preds, y).astype(jnp.float32)
        return state, batch_sums(metrics, preds, y, losses, weight)
    return eval_step


def inference(state: TrainState, x: PyTree, compute_dtype: Any = None) -> tuple[jax.Array, PyTree]:
    """The model's outputs for ``x`` in inference mode (float32 when computed in ``compute_dtype``) and its new
    carried state (``{}`` without one)."""
    variables, x = cast_floats(state.variables(), compute_dtype), cast_floats(x, compute_dtype)
    if CARRY in state.model_state:
        preds, new_vars = state.apply(variables, x, False, mutable=[CARRY])
        carry = jax.tree.map(lambda new, old: new.astype(old.dtype), new_vars[CARRY], state.model_state[CARRY])
    else:
        preds, carry = state.apply(variables, x, False), {}
    return cast_floats(preds, jnp.float32 if compute_dtype else None), carry


def cast_floats(tree: PyTree, dtype: Any) -> PyTree:
    """The floating-point leaves of ``tree`` as ``dtype`` (``None``: unchanged); integer leaves (labels, token
    ids) stay. Mixed precision (fastai's ``to_fp16``, Micikevicius et al. 2018) casts the float32 params and
    the inputs inside the step: the gradients come back float32 through the cast, and the optimizer updates
    the float32 master params."""
    if dtype is None:
        return tree
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def compose_transforms(transforms: Sequence[Transform]) -> Transform:
    """Apply ``transforms`` in order; each draws from its own key (folded from ``key`` by position)."""
    def apply(x: PyTree, training: bool, key: jax.Array) -> PyTree:
        for i, tfm in enumerate(transforms):
            x = tfm(x, training, jax.random.fold_in(key, i))
        return x
    return apply


def no_transform(x: PyTree, training: bool, key: jax.Array) -> PyTree:
    """The identity :data:`Transform`: ``x`` unchanged whatever ``training`` and ``key``."""
    return x


def gather(data: tuple[PyTree, jax.Array], idx: jax.Array, weight: jax.Array) -> Batch:
    """``(x[idx], y[idx], weight)`` from the device-resident ``data = (x, y)`` (``x`` may be a pytree), ``idx`` of
    any shape (one batch, or a call's batches). The compiled calls gather all their batches before their loop: a
    gather inside XLA:CPU's loop made the makemore step twice as slow (85 vs 43 CPU-µs).
    """
    x_all, y_all = data
    return jax.tree.map(lambda a: a[idx], x_all), y_all[idx], weight


def _add(acc: dict, sums: dict) -> dict:
    return jax.tree.map(jnp.add, acc, sums)


def make_train_call(train_step: Callable[[TrainState, Batch], tuple[TrainState, dict]],
                    input_transform: Callable[[PyTree], PyTree] = lambda x: x,
                    batch_transform: Transform = no_transform,
                    schedules: Mapping[str, Schedule] | None = None,
                    constrain: Callable = lambda t: t, jit_kwargs: Mapping | None = None) -> Callable:
    """``train_call(state, acc, data, idx, weight, pos, origin, n_steps) -> (state, acc, pos, outputs)``.

    Runs the batches ``idx[pos : pos + n_steps]`` (rows of an epoch's index matrix, with their ``weight``)
    of ``data = (x, y)`` through ``train_step``: ``input_transform`` (the dataset's, e.g. uint8 → float) and
    ``batch_transform`` (normalization, augmentation) are applied inside. Before each step every
    ``schedules[name]`` sets that injected hyperparameter from ``state.step - origin`` (steps into the fit).
    ``acc`` (running metric sums) and ``pos`` come back advanced; ``outputs`` holds the per-step loss and hook
    outputs stacked over the ``n_steps`` steps. ``n_steps`` is static; the state is donated. ``constrain`` lays
    each batch out on the devices (:func:`jaxlearn.sharding.batch_constraint`); ``jit_kwargs`` go to ``jax.jit``.
    """
    schedules = dict(schedules or {})

    def train_call(state, acc, data, idx, weight, pos, origin, n_steps):
        batches = gather(data, jax.lax.dynamic_slice_in_dim(idx, pos, n_steps),
                         jax.lax.dynamic_slice_in_dim(weight, pos, n_steps))

        def body(carry, batch):
            state, acc = carry
            if schedules:
                at = state.step - origin
                state = state.replace(opt_state=set_hyperparams(
                    state.opt_state, **{name: fn(at) for name, fn in schedules.items()}))
            key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), AUGMENT_STREAM)
            x, y, w = constrain(batch)
            state, out = train_step(state, (batch_transform(input_transform(x), True, key), y, w))
            return (state, _add(acc, out.pop("sums"))), out

        if n_steps == 1:
            # No loop for a single step: inside any loop XLA's CPU backend keeps conv weight-gradients in a
            # form ~20x slower than outside one (measured on the lesson-17 CNN and the ResNet with lax's convs;
            # jaxlearn.nn.conv's slices do not have this problem).
            (state, acc), out = body((state, acc), jax.tree.map(lambda a: a[0], batches))
            return state, acc, pos + 1, jax.tree.map(lambda a: a[None], out)
        (state, acc), outputs = jax.lax.scan(body, (state, acc), batches)
        return state, acc, pos + n_steps, outputs

    return jax.jit(train_call, static_argnames="n_steps", donate_argnums=(0, 1), **(jit_kwargs or {}))


def make_eval_call(eval_step: Callable[[TrainState, Batch], tuple[TrainState, dict]],
                   input_transform: Callable[[PyTree], PyTree] = lambda x: x,
                   batch_transform: Transform = no_transform, constrain: Callable = lambda t: t,
                   jit_kwargs: Mapping | None = None) -> Callable:
    """``eval_call(state, acc, data, idx, weight) -> (acc, carry)``: every batch of ``idx`` through ``eval_step``
    in one scan (the transforms, ``constrain`` and ``jit_kwargs`` as in :func:`make_train_call`); returns the
    summed metrics and the model's carried state after the last batch (``{}`` without one)."""
    def eval_call(state, acc, data, idx, weight):
        key = jax.random.key(EVAL_SEED)

        def body(carry, batch):
            state, acc = carry
            x, y, w = constrain(batch)
            state, sums = eval_step(state, (batch_transform(input_transform(x), False, key), y, w))
            return (state, _add(acc, sums)), None

        (state, acc), _ = jax.lax.scan(body, (state, acc), gather(data, idx, weight))
        return acc, state.model_state.get(CARRY, {})

    return jax.jit(eval_call, **(jit_kwargs or {}))


def make_predict(input_transform: Callable[[PyTree], PyTree] = lambda x: x,
                 batch_transform: Transform = no_transform, compute_dtype: Any = None) -> Callable:
    """``predict(state, x) -> outputs`` in inference mode, the inputs transformed as for evaluation
    (``input_transform``, then ``batch_transform``), the forward pass in ``compute_dtype``."""
    def predict(state: TrainState, x: PyTree) -> jax.Array:
        x = batch_transform(input_transform(x), False, jax.random.key(EVAL_SEED))
        return inference(state, x, compute_dtype)[0]
    return jax.jit(predict)


def predict_in_batches(predict: Callable, state: TrainState, x: PyTree, batch_size: int,
                       put: Callable[[PyTree], PyTree] = lambda t: t) -> np.ndarray:
    """``predict(state, batch)`` over ``x`` in batches of ``batch_size`` (``put`` places each on the devices),
    concatenated on the host: one path for the Learner and an exported model."""
    n = len(jax.tree.leaves(x)[0])
    outs = [predict(state, put(jax.tree.map(lambda a: a[i:i + batch_size], x))) for i in range(0, n, batch_size)]
    return np.concatenate(jax.device_get(outs))
