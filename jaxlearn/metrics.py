"""Metrics accumulated on the device: per-example values summed inside the compiled calls.

A :class:`Metric` maps ``(preds, y)`` to one value per example; the train and eval calls add up
``value * weight`` (padding examples weigh 0) and the Learner reports ``finalize(sum / count)`` once per epoch.
Values with more axes than one (a sequence model's per-token numbers) are averaged over the extra axes first.

``Learner(..., metrics=[accuracy, rmse, my_fn])``: a plain function ``(preds, y) -> per-example values``
is a metric named after it.

How sure is an accuracy? (DLVU "Tools of the trade": aim for ~10,000 test instances.) A test accuracy ``p``
measured on ``n`` independent examples is a binomial proportion; its standard error is ``sqrt(p (1 - p) / n)``
and the normal-approximation 95% confidence interval is ``p ± 1.96 · SE``. With ``n = 100`` and ``p ≈ 0.5`` the
half-width is ±0.098 (the lecture's "±0.1"), with ``n = 10,000`` ±0.0098: only then do differences of a
percentage point between models start to mean something.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class Metric:
    """``name``, ``fn(preds, y) -> values`` (one per example) and ``finalize(mean) -> reported value``."""
    name: str
    fn: Callable[[jax.Array, jax.Array], jax.Array]
    finalize: Callable[[float], float] = field(default=lambda mean: mean)


def per_example(values: jax.Array, batch: int) -> jax.Array:
    """Average ``values`` over every axis after the first (batch) one."""
    values = jnp.asarray(values, jnp.float32)
    if values.ndim == 0 or values.shape[0] != batch:
        raise ValueError(f"a metric must return one value per example (leading axis {batch}), "
                         f"got shape {values.shape}")
    return values.reshape(batch, -1).mean(1)


def _accuracy(preds: jax.Array, y: jax.Array) -> jax.Array:
    return preds.argmax(-1) == y


def _squared_error(preds: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.square(preds.astype(jnp.float32) - y)


def _absolute_error(preds: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.abs(preds.astype(jnp.float32) - y)


def _nll(preds: jax.Array, y: jax.Array) -> jax.Array:
    return -jnp.take_along_axis(jax.nn.log_softmax(preds.astype(jnp.float32)), y[..., None], -1)[..., 0]


accuracy = Metric("accuracy", _accuracy)
mse = Metric("mse", _squared_error)
rmse = Metric("rmse", _squared_error, math.sqrt)
mae = Metric("mae", _absolute_error)
perplexity = Metric("perplexity", _nll, lambda mean: math.exp(min(mean, 700.0)))  # exp of the mean token NLL


def as_metric(m: Metric | Callable) -> Metric:
    if isinstance(m, Metric):
        return m
    if callable(m):
        return Metric(getattr(m, "__name__", "metric"), m)
    raise TypeError(f"a metric is a jaxlearn.metrics.Metric or a function (preds, y) -> values, got {m!r}")


def as_metrics(metrics: Sequence[Metric | Callable]) -> tuple[Metric, ...]:
    out = tuple(as_metric(m) for m in metrics)
    names = [m.name for m in out]
    if len(set(names)) != len(names) or {"loss", "count"} & set(names):
        raise ValueError(f"metric names must be distinct and not 'loss' or 'count', got {names}")
    return out


def batch_sums(metrics: Sequence[Metric], preds: jax.Array, y: jax.Array, losses: jax.Array,
               weight: jax.Array) -> dict[str, jax.Array]:
    """One batch's weighted sums: loss, count and every metric."""
    sums = {"loss": (losses * weight).sum(), "count": weight.sum()}
    for m in metrics:
        sums[m.name] = (per_example(m.fn(preds, y), weight.shape[0]) * weight).sum()
    return sums


def report(metrics: Sequence[Metric], sums: dict) -> dict[str, float]:
    """An epoch's numbers from its host-side sums: mean loss and each metric's finalized mean."""
    count = max(float(sums["count"]), 1.0)
    out = {"loss": float(sums["loss"]) / count}
    for m in metrics:
        out[m.name] = float(m.finalize(float(sums[m.name]) / count))
    return out


# ------------------------------------------------------------------ how sure is an accuracy

Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal (the lecture's 1.96)


def accuracy_ci_halfwidth(p: float, n: int, z: float = Z_95) -> float:
    """``z * sqrt(p (1 - p) / n)``: half-width of the normal-approximation confidence interval."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {p}")
    if n <= 0:
        raise ValueError(f"need a positive number of test examples, got n={n}")
    return z * math.sqrt(p * (1.0 - p) / n)


def accuracy_ci(p: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """``(p - h, p + h)`` with ``h = accuracy_ci_halfwidth(p, n, z)``, clipped to [0, 1]."""
    h = accuracy_ci_halfwidth(p, n, z)
    return max(0.0, p - h), min(1.0, p + h)


def format_accuracy(p: float, n: int, z: float = Z_95) -> str:
    """``'92.51% ± 0.52% (95% CI, n=10000)'``: how every accuracy in the experiments is reported."""
    return f"{100 * p:.2f}% ± {100 * accuracy_ci_halfwidth(p, n, z):.2f}% (95% CI, n={n})"
