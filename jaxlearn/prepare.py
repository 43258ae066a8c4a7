"""What the Learner builds and checks before its first fit: the first train state (on two training examples,
with the loss scaling mixed precision needs), the carried state of a stateful model, the default metrics, and
the checks that the labels fit the model's outputs and the loss — each failure a clear error naming the shapes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxlearn.checks import describe
from jaxlearn.losses import cross_entropy, is_classification, per_example_loss
from jaxlearn.metrics import Metric, accuracy
from jaxlearn.optim.loss_scaling import mixed_precision
from jaxlearn.step import CARRY, TrainState, create_train_state
from jaxlearn.train_flag import train_flag, train_kwargs, warn_unknown_flags
from jaxlearn.trees import PyTree


def _sample(ds, n: int) -> PyTree:
    return ds.transform(jax.tree.map(lambda a: a[:n], ds.x))


def init_state(model: nn.Module, tx: optax.GradientTransformation, ds, seed: int,
               compute_dtype: Any = None) -> TrainState:
    """:func:`~jaxlearn.step.create_train_state` of ``model`` on two examples of ``ds`` (after its transform),
    initialized from ``seed``, with a clear error when the model cannot take them; the optimizer ``tx`` gets the
    loss scaling ``compute_dtype`` needs (:func:`~jaxlearn.optim.loss_scaling.mixed_precision`)."""
    sample = _sample(ds, 2)
    warn_unknown_flags(model)
    try:
        return create_train_state(model, mixed_precision(tx, compute_dtype), sample, seed)
    except Exception as e:  # the model's first call: a shape / dtype it cannot take
        raise ValueError(f"the model cannot be initialized on the training inputs (per example "
                         f"{describe(sample)} after the dataset's transform; stored as {describe(ds.x)}): "
                         f"{type(e).__name__}: {e}") from e


def initial_carry(model: nn.Module, ds, batch_size: int, seed: int) -> PyTree:
    """The ``model``'s ``'carry'`` collection as initialized (from ``seed``) for ``batch_size`` examples of the
    dataset ``ds`` (``{}`` without one)."""
    flag = train_kwargs(train_flag(model), False)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(seed), x, **flag), _sample(ds, 1))
    if CARRY not in shapes:
        return {}
    key = jax.random.key(seed)
    variables = model.init({"params": key, "dropout": key}, _sample(ds, batch_size), **flag)
    return variables[CARRY]


def output_shape(state: TrainState, ds) -> jax.ShapeDtypeStruct:
    """The outputs of the model of ``state`` for two examples of ``ds`` in eval mode, as shapes (nothing is
    computed)."""
    return jax.eval_shape(lambda s, x: s.apply(s.variables(), x, False, mutable=[CARRY])[0], state, _sample(ds, 2))


def default_metrics(state: TrainState, ds) -> list[Metric]:
    """Accuracy when the model of ``state`` classifies ``ds``'s integer class labels; none otherwise (the loss is
    always reported)."""
    return [accuracy] if is_classification(output_shape(state, ds), ds.y) else []


def check_loss_and_targets(state: TrainState, dls, loss_fn: Callable) -> None:
    """The labels of ``dls`` must fit the outputs of the model of ``state`` and ``loss_fn``: caught here, not as
    a silently wrong loss later."""
    preds = output_shape(state, dls.train)
    y = dls.train.y
    if loss_fn is cross_entropy and not is_classification(preds, y):
        raise ValueError(f"cross_entropy needs one integer class label per example (per time step): the model "
                         f"outputs {tuple(preds.shape[1:])} {preds.dtype} per example, the labels are "
                         f"{tuple(y.shape[1:])} {y.dtype} per example")
    try:
        jax.eval_shape(lambda p, t: per_example_loss(loss_fn, p, t), preds, y[:2])
    except Exception as e:
        raise ValueError(f"loss_fn cannot take the model's outputs ({tuple(preds.shape[1:])} {preds.dtype} "
                         f"per example) and the labels ({tuple(y.shape[1:])} {y.dtype} per example): "
                         f"{type(e).__name__}: {e}") from e
    for name, ds in (("train", dls.train), ("valid", dls.valid)):
        check_labels(preds, ds, name)


def check_labels(preds: jax.ShapeDtypeStruct, ds, name: str) -> None:
    """A classifier's labels (those of ``ds``, called ``name`` in the error) must index its outputs (shaped as
    ``preds``): a label of 10 with 10 outputs is one-hot to zeros, a loss of 0 that looks like a perfect model."""
    if is_classification(preds, ds.y) and len(ds.y):
        lo, hi = int(ds.y.min()), int(ds.y.max())
        if lo < 0 or hi >= preds.shape[-1]:
            raise ValueError(f"{name} labels span {lo}..{hi} but the model has {preds.shape[-1]} outputs: "
                             f"labels must be in 0..{preds.shape[-1] - 1}")


@functools.partial(jax.jit, static_argnums=0)
def epoch_start(template: tuple[tuple[str, tuple[int, ...]], ...]) -> tuple[dict, jax.Array]:
    """Zero running sums shaped as ``template`` (:func:`jaxlearn.metrics.sums_template`) and batch position for
    a new epoch, made on the device (nothing is transferred)."""
    return {name: jnp.zeros(shape, jnp.float32) for name, shape in template}, jnp.zeros((), jnp.int32)
