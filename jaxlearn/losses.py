"""Losses the train step takes: each maps ``(preds, y)`` to one loss per example, and the step averages them
with the batch's weights (padding weighs 0). A sequence model's per-token losses are averaged per example."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy ``-log softmax(logits)[label]`` of the model's ``logits`` (N, ..., C)
    against integer ``labels`` (N, ...); a sequence's per-token losses are averaged.

    Written with a one-hot mask rather than a gather: its gradient is then elementwise, where a gather's is a
    scatter-add, which XLA:CPU runs as a slow serial loop inside a training scan.
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    nll = -(jax.nn.one_hot(labels, logits.shape[-1], dtype=logp.dtype) * logp).sum(-1)
    return nll.reshape(nll.shape[0], -1).mean(1) if nll.ndim > 1 else nll


def mse(preds: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example squared error ``(preds - y)²`` of the model's outputs ``preds`` against the targets ``y``,
    averaged over any axes after the batch one: the regression
    loss (fast.ai 2018's collaborative filtering); the Learner's mean of it is the MSE."""
    err = jnp.square(preds.astype(jnp.float32) - y)
    return err.reshape(err.shape[0], -1).mean(1) if err.ndim > 1 else err


def is_classification(preds: jax.ShapeDtypeStruct | jax.Array, y: jax.Array) -> bool:
    """Whether ``preds`` (the model's outputs, or their shape) and targets ``y`` are a classification: integer
    labels with one more axis of logits (one class per example, or per step)."""
    return preds.ndim == y.ndim + 1 and jnp.issubdtype(y.dtype, jnp.integer)


def per_example_loss(loss_fn: Callable, preds: jax.Array, y: jax.Array) -> jax.Array:
    """``loss_fn(preds, y)``, checked to be one loss per example."""
    losses = loss_fn(preds, y)
    if losses.shape != preds.shape[:1]:
        raise ValueError(f"loss_fn must return one loss per example, shape {preds.shape[:1]}, "
                         f"got {losses.shape}")
    return losses
