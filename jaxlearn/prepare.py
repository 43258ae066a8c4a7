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
from jaxlearn.step import CARRY, TrainState, create_train_state, takes_train_flag
from jaxlearn.trees import PyTree


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


def _output_shape(state: TrainState, ds) -> jax.ShapeDtypeStruct:
    return jax.eval_shape(lambda s, x: s.apply(s.variables(), x, False, mutable=[CARRY])[0], state, _sample(ds, 2))


def default_metrics(state: TrainState, ds) -> list[Metric]:
    """Accuracy for integer class labels; none otherwise (the loss is always reported)."""
    return [accuracy] if is_classification(_output_shape(state, ds), ds.y) else []


def check_loss_and_targets(state: TrainState, dls, loss_fn: Callable) -> None:
    """Labels must fit the model's outputs and the loss: caught here, not as a silently wrong loss later."""
    preds = _output_shape(state, dls.train)
    y = dls.train.y
    classification = is_classification(preds, y)
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

