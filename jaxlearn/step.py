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

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxlearn.metrics import Metric, batch_sums
from jaxlearn.optim import set_hyperparams
from jaxlearn.stats import flatten_intermediates

PyTree = Any
Batch = tuple[PyTree, jax.Array, jax.Array]  # inputs, targets, per-example weight (0 = padding)
Transform = Callable[[PyTree, bool, jax.Array], PyTree]  # (x, training, key) -> x
Schedule = Callable[[jax.Array], jax.Array]  # steps into the fit -> hyperparameter value

CARRY = "carry"  # the collection a model keeps between batches
_TRANSIENT = ("intermediates", "perturbations")  # collections made afresh by every call, never state
AUGMENT_STREAM = 1  # folded into the step key so augmentation and dropout draw independent numbers
EVAL_SEED = 0  # evaluation transforms see a fixed key: the same inputs give the same predictions


class TrainState(struct.PyTreeNode):
    """Everything a training run carries from step to step; a pytree, so it passes through ``jit``.

    ``model_state`` holds the model's collections other than params (``batch_stats``, ``carry``);
    ``rng`` is a fixed key from which each step derives its own (``fold_in(rng, step)``), so dropout and
    augmentation depend only on the seed and the step number.
    """
    step: jax.Array
    params: PyTree
    model_state: PyTree
    opt_state: PyTree
    rng: jax.Array
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    takes_train: bool = struct.field(pytree_node=False, default=True)

    def variables(self, params: PyTree | None = None) -> dict:
        return {"params": self.params if params is None else params, **self.model_state}

    def apply(self, variables: Mapping, x: PyTree, train: bool, **kwargs) -> Any:
        """``apply_fn`` with ``train=`` passed only to models whose ``__call__`` takes it."""
        return self.apply_fn(variables, x, **({"train": train} if self.takes_train else {}), **kwargs)


def takes_train_flag(model: nn.Module) -> bool:
    return "train" in inspect.signature(type(model).__call__).parameters


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, sample_x: PyTree,
                       seed: int = 0) -> TrainState:
    """Initialize ``model`` on ``sample_x`` (a batch of inputs: a carried state takes its batch size) and
    ``tx`` on its params. Collections made afresh by every call (``intermediates``, ``perturbations``) are
    not kept."""
    init_key, rng = jax.random.split(jax.random.key(seed))
    takes_train = takes_train_flag(model)
    variables = dict(model.init({"params": init_key, "dropout": init_key}, sample_x,
                                **({"train": False} if takes_train else {})))
    params = variables.pop("params")
    model_state = {k: v for k, v in variables.items() if k not in _TRANSIENT}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                      opt_state=tx.init(params), rng=rng, apply_fn=model.apply, tx=tx, takes_train=takes_train)


def copy_state(tree: PyTree) -> PyTree:
    """A device-side copy: the compiled train call donates (reuses) its input state's buffers, so a state
    kept for later (the last good one, the best one) must be a copy."""
    return jax.tree.map(lambda a: a.copy() if isinstance(a, jax.Array) else a, tree)


def distinct_buffers(tree: PyTree) -> PyTree:
    """``tree`` with every array that appears in more than one leaf copied, so that each leaf owns its buffer
    (the same scalar set as two groups' learning rate, say): XLA cannot donate one buffer twice. A tree without
    such sharing comes back as it is."""
    ids = [id(a) for a in jax.tree.leaves(tree) if isinstance(a, jax.Array)]
    if len(set(ids)) == len(ids):
        return tree
    seen: set[int] = set()

    def own(a):
        if not isinstance(a, jax.Array):
            return a
        if id(a) in seen:
            return a.copy()
        seen.add(id(a))
        return a
    return jax.tree.map(own, tree)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy with integer labels; a sequence's per-token losses are averaged.

    Written with a one-hot mask rather than a gather: its gradient is then elementwise, where a gather's is a
    scatter-add, which XLA:CPU runs as a slow serial loop inside a training scan.
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    nll = -(jax.nn.one_hot(labels, logits.shape[-1], dtype=logp.dtype) * logp).sum(-1)
    return nll.reshape(nll.shape[0], -1).mean(1) if nll.ndim > 1 else nll


@dataclass(frozen=True)
class StepContext:
    """What a callback's ``in_step`` hook sees while the train step is traced (all arrays are traced).

    Hooks must reduce what they keep (means, histograms, norms): their outputs leave the device.
    ``out_grads`` (``{layer: dL/d output}``) is filled only when a hook asked for it (``perturb``).
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


def per_example_loss(loss_fn: Callable, preds: jax.Array, y: jax.Array) -> jax.Array:
    losses = loss_fn(preds, y)
    if losses.shape != preds.shape[:1]:
        raise ValueError(f"loss_fn must return one loss per example, shape {preds.shape[:1]}, "
                         f"got {losses.shape}")
    return losses


def _zeros_like_perturbations(state: TrainState, x: PyTree, params: PyTree) -> PyTree:
    shapes = jax.eval_shape(lambda: state.apply(state.variables(params), x, True,
                                                mutable=["perturbations", *state.model_state],
                                                rngs={"dropout": state.rng})[1].get("perturbations", {}))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def make_train_step(loss_fn: Callable = cross_entropy, metrics: Sequence[Metric] = (),
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

        perturbations = _zeros_like_perturbations(state, x, state.params) if perturb else None
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


def make_eval_step(loss_fn: Callable = cross_entropy, metrics: Sequence[Metric] = (), compute_dtype: Any = None
                   ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """``eval_step(state, (x, y, weight)) -> (state, sums)``: inference mode (running norm statistics); only
    a carried state changes. The forward pass runs in ``compute_dtype``, the loss and sums in float32."""
    def eval_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        x, y, weight = batch
        preds, carry = inference(state, x, compute_dtype)
        if CARRY in state.model_state:
            state = state.replace(model_state={**state.model_state, CARRY: carry})
        losses = per_example_loss(loss_fn, preds, y).astype(jnp.float32)
        return state, batch_sums(metrics, preds, y, losses, weight)
    return eval_step


def inference(state: TrainState, x: PyTree, compute_dtype: Any = None) -> tuple[jax.Array, PyTree]:
    """The model's outputs in inference mode (float32 when computed in ``compute_dtype``) and its new carried
    state (``{}`` without one)."""
    variables, x = cast_floats(state.variables(), compute_dtype), cast_floats(x, compute_dtype)
    if CARRY in state.model_state:
        preds, new_vars = state.apply(variables, x, False, mutable=[CARRY])
        carry = jax.tree.map(lambda new, old: new.astype(old.dtype), new_vars[CARRY], state.model_state[CARRY])
    else:
        preds, carry = state.apply(variables, x, False), {}
    return cast_floats(preds, jnp.float32 if compute_dtype else None), carry


# ------------------------------------------------------------------------------------------ mixed precision

def cast_floats(tree: PyTree, dtype: Any) -> PyTree:
    """The floating-point leaves of ``tree`` as ``dtype`` (``None``: unchanged); integer leaves (labels, token
    ids) stay. Mixed precision (fastai's ``to_fp16``, Micikevicius et al. 2018) casts the float32 params and
    the inputs inside the step: the gradients come back float32 through the cast, and the optimizer updates
    the float32 master params."""
    if dtype is None:
        return tree
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


class LossScaleState(NamedTuple):
    scale: jax.Array       # the loss is multiplied by this before differentiating
    good_steps: jax.Array  # finite steps since the scale last changed
    inner: optax.OptState


def dynamic_loss_scale(inner: optax.GradientTransformation, init_scale: float = 2.0 ** 15,
                       growth_interval: int = 2000, factor: float = 2.0) -> optax.GradientTransformation:
    """Dynamic loss scaling around ``inner`` for float16 training (fastai's ``MixedPrecision`` with PyTorch's
    ``GradScaler`` defaults): small float16 gradients underflow to 0 unless the loss is scaled up first.

    The train step multiplies the loss by ``scale`` (:func:`loss_scale`); ``update`` divides the gradients by
    it. Non-finite gradients (the scale was too high) skip the update — ``inner``'s state is kept — and divide
    the scale by ``factor``; ``growth_interval`` finite steps in a row multiply it by ``factor``.
    """
    def init(params: PyTree) -> LossScaleState:
        return LossScaleState(jnp.asarray(init_scale, jnp.float32), jnp.zeros((), jnp.int32), inner.init(params))

    def update(grads: PyTree, state: LossScaleState, params: PyTree = None) -> tuple[PyTree, LossScaleState]:
        grads = jax.tree.map(lambda g: g / state.scale, grads)
        finite = jnp.all(jnp.array([jnp.isfinite(g).all() for g in jax.tree.leaves(grads)]))
        updates, new_inner = inner.update(grads, state.inner, params)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        updates = jax.tree.map(lambda u: jnp.where(finite, u, 0), updates)
        grow = finite & (state.good_steps + 1 >= growth_interval)
        scale = jnp.where(finite, jnp.where(grow, state.scale * factor, state.scale),
                          jnp.maximum(state.scale / factor, 1.0))
        good_steps = jnp.where(finite & ~grow, state.good_steps + 1, 0)
        return updates, LossScaleState(scale, good_steps, jax.tree.map(keep, new_inner, state.inner))

    return optax.GradientTransformation(init, update)


def loss_scale(opt_state: optax.OptState) -> jax.Array | float:
    """The current loss scale of a :func:`dynamic_loss_scale` optimizer state; 1 for any other."""
    return opt_state.scale if isinstance(opt_state, LossScaleState) else 1.0


def mixed_precision(tx: optax.GradientTransformation, compute_dtype: Any) -> optax.GradientTransformation:
    """``tx`` for training in ``compute_dtype``: float16 needs dynamic loss scaling (its exponent range is
    narrow); bfloat16 has float32's range and needs none."""
    return dynamic_loss_scale(tx) if compute_dtype is not None and jnp.dtype(compute_dtype) == jnp.float16 else tx


def compose_transforms(transforms: Sequence[Transform]) -> Transform:
    """Apply ``transforms`` in order; each draws from its own key (folded from ``key`` by position)."""
    def apply(x: PyTree, training: bool, key: jax.Array) -> PyTree:
        for i, tfm in enumerate(transforms):
            x = tfm(x, training, jax.random.fold_in(key, i))
        return x
    return apply


def no_transform(x: PyTree, training: bool, key: jax.Array) -> PyTree:
    return x


def gather(data: tuple[PyTree, jax.Array], idx: jax.Array, weight: jax.Array) -> Batch:
    """The examples ``idx`` (any shape: one batch, or a call's batches) of the device-resident ``(x, y)``.

    The compiled calls gather all their batches before their loop: a gather inside XLA:CPU's loop made the
    makemore step twice as slow (85 vs 43 CPU-µs).
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
    outputs stacked over the ``n_steps`` steps. ``n_steps`` is static; the state is donated.
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
            # jaxlearn.conv's slices do not have this problem).
            (state, acc), out = body((state, acc), jax.tree.map(lambda a: a[0], batches))
            return state, acc, pos + 1, jax.tree.map(lambda a: a[None], out)
        (state, acc), outputs = jax.lax.scan(body, (state, acc), batches)
        return state, acc, pos + n_steps, outputs

    return jax.jit(train_call, static_argnames="n_steps", donate_argnums=(0, 1), **(jit_kwargs or {}))


def make_eval_call(eval_step: Callable[[TrainState, Batch], tuple[TrainState, dict]],
                   input_transform: Callable[[PyTree], PyTree] = lambda x: x,
                   batch_transform: Transform = no_transform, constrain: Callable = lambda t: t,
                   jit_kwargs: Mapping | None = None) -> Callable:
    """``eval_call(state, acc, data, idx, weight) -> (acc, carry)``: every batch of ``idx`` in one scan.

    Returns the summed metrics and the model's carried state after the last batch (``{}`` without one).
    """
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
    """``predict(state, x) -> outputs`` in inference mode, the inputs transformed as for evaluation."""
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


# ------------------------------------------------------------------------------ compiled for callbacks

def callbacks_transform(callbacks: Sequence[Any]) -> Transform:
    """The ``batch_transform`` of every callback that has one, in the given order, as one transform."""
    return compose_transforms([cb.batch_transform for cb in callbacks if hasattr(cb, "batch_transform")])


def compiled_calls(cache: dict, callbacks: Sequence[Any], total_steps: int, loss_fn: Callable,
                   metrics: Sequence[Metric], dls, constrain: Callable, jit_kwargs: Mapping,
                   compute_dtype: Any = None) -> tuple:
    """The train, eval and predict calls for ``callbacks`` (sorted by order), built once and kept in ``cache``.

    What a callback puts into the trace — ``in_step`` hooks and ``capture`` filters, ``batch_transform``,
    ``hyper_schedules`` (with the fit's ``total_steps``) — is named by its ``signature``: calls are shared by
    callbacks with equal signatures. The eval and predict calls depend on the transforms only. Returns
    ``(train_call, eval_call, predict, hooked)``, ``hooked`` mapping the train call's output names to the
    callbacks whose ``in_step`` made them. ``compute_dtype``: see :func:`make_train_step` (one per cache).
    """
    in_step = [cb for cb in callbacks if hasattr(cb, "in_step") or cb.capture is not None]
    tfms = tuple(cb.signature for cb in callbacks if hasattr(cb, "batch_transform"))
    scheds = [cb for cb in callbacks if hasattr(cb, "hyper_schedules")]
    key = (tuple(cb.signature for cb in in_step), tfms, tuple(cb.signature for cb in scheds),
           total_steps if scheds else None)
    transform = callbacks_transform(callbacks)
    if total_steps and key not in cache:  # total_steps 0: evaluation or prediction only, no train call
        filters = [cb.capture for cb in in_step if cb.capture is not None]
        capture = (lambda mdl, method: any(f(mdl, method) for f in filters)) if filters else None
        hooks = {f"cb{i}": cb.in_step for i, cb in enumerate(in_step) if hasattr(cb, "in_step")}
        train_step = make_train_step(loss_fn, metrics, capture, hooks, perturb=any(cb.perturb for cb in in_step),
                                     compute_dtype=compute_dtype)
        schedules = {k: v for cb in scheds for k, v in cb.hyper_schedules(total_steps).items()}
        cache[key] = make_train_call(train_step, dls.train.transform, transform, schedules, constrain, jit_kwargs)
    if tfms not in cache:
        cache[tfms] = (make_eval_call(make_eval_step(loss_fn, metrics, compute_dtype), dls.valid.transform,
                                      transform, constrain, jit_kwargs),
                       make_predict(dls.valid.transform, transform, compute_dtype))
    hooked = {f"cb{i}": cb for i, cb in enumerate(in_step) if hasattr(cb, "in_step")}
    return cache.get(key), *cache[tfms], hooked


def n_traces(cache: dict) -> int:
    """How many times the train and eval calls in a :func:`compiled_calls` cache were traced."""
    return sum((c if callable(c) else c[0])._cache_size() for c in cache.values())


# ------------------------------------------------------------------------------- setting up a Learner's run

def describe(x: PyTree) -> str:
    """Per-example shape and dtype of an input array (or of each array of a pytree), for error messages."""
    one = lambda a: f"shape {tuple(a.shape[1:])}, dtype {a.dtype}"  # noqa: E731
    return one(x) if isinstance(x, (jax.Array, np.ndarray)) else str(jax.tree.map(one, x))


def _sample(ds, n: int) -> PyTree:
    return ds.transform(jax.tree.map(lambda a: a[:n], ds.x))


def init_state(model: nn.Module, tx: optax.GradientTransformation, ds, seed: int,
               compute_dtype: Any = None) -> TrainState:
    """:func:`create_train_state` on two examples of ``ds`` (after its transform), with a clear error when the
    model cannot take them; ``tx`` gets the loss scaling ``compute_dtype`` needs (:func:`mixed_precision`)."""
    sample = _sample(ds, 2)
    try:
        return create_train_state(model, mixed_precision(tx, compute_dtype), sample, seed)
    except Exception as e:  # the model's first call: a shape / dtype it cannot take
        raise ValueError(f"the model cannot be initialized on the training inputs (per example "
                         f"{describe(sample)} after the dataset's transform; stored as {describe(ds.x)}): "
                         f"{type(e).__name__}: {e}") from e


def initial_carry(model: nn.Module, ds, batch_size: int, seed: int) -> PyTree:
    """The model's ``'carry'`` collection as initialized for ``batch_size`` examples (``{}`` without one)."""
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(seed), x, **(
        {"train": False} if takes_train_flag(model) else {})), _sample(ds, 1))
    if CARRY not in shapes:
        return {}
    key = jax.random.key(seed)
    variables = model.init({"params": key, "dropout": key}, _sample(ds, batch_size),
                           **({"train": False} if takes_train_flag(model) else {}))
    return variables[CARRY]


def _is_classification(preds: jax.ShapeDtypeStruct, y: jax.Array) -> bool:
    return preds.ndim == y.ndim + 1 and jnp.issubdtype(y.dtype, jnp.integer)


def _output_shape(state: TrainState, ds) -> jax.ShapeDtypeStruct:
    return jax.eval_shape(lambda s, x: s.apply(s.variables(), x, False, mutable=[CARRY])[0], state, _sample(ds, 2))


def default_metrics(state: TrainState, ds) -> list[Metric]:
    """Accuracy for integer class labels; none otherwise (the loss is always reported)."""
    from jaxlearn.metrics import accuracy
    return [accuracy] if _is_classification(_output_shape(state, ds), ds.y) else []


def check_loss_and_targets(state: TrainState, dls, loss_fn: Callable) -> None:
    """Labels must fit the model's outputs and the loss: caught here, not as a silently wrong loss later."""
    preds = _output_shape(state, dls.train)
    y = dls.train.y
    classification = _is_classification(preds, y)
    if loss_fn is cross_entropy and not classification:
        raise ValueError(f"cross_entropy needs one integer class label per example (per time step): the model "
                         f"outputs {tuple(preds.shape[1:])} {preds.dtype} per example, the labels are "
                         f"{tuple(y.shape[1:])} {y.dtype} per example")
    try:
        jax.eval_shape(lambda p, t: per_example_loss(loss_fn, p, t), preds, y[:2])
    except Exception as e:
        raise ValueError(f"loss_fn cannot take the model's outputs ({tuple(preds.shape[1:])} {preds.dtype} "
                         f"per example) and the labels ({tuple(y.shape[1:])} {y.dtype} per example): "
                         f"{type(e).__name__}: {e}") from e
    if classification:
        for name, ds in (("train", dls.train), ("valid", dls.valid)):
            lo, hi = int(ds.y.min()), int(ds.y.max())
            if lo < 0 or hi >= preds.shape[-1]:
                raise ValueError(f"{name} labels span {lo}..{hi} but the model has {preds.shape[-1]} outputs: "
                                 f"labels must be in 0..{preds.shape[-1] - 1}")


@functools.partial(jax.jit, static_argnums=0)
def epoch_start(metric_names: tuple[str, ...]) -> tuple[dict, jax.Array]:
    """Zero metric sums and batch position for a new epoch, made on the device (nothing is transferred)."""
    return ({k: jnp.zeros((), jnp.float32) for k in ("loss", "count", *metric_names)},
            jnp.zeros((), jnp.int32))
