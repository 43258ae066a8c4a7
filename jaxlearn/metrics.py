"""Metrics accumulated on the device: per-example values summed inside the compiled calls.

A :class:`Metric` maps ``(preds, y)`` to one value per example; the train and eval calls add up
``value * weight`` (padding examples weigh 0) and the Learner reports ``finalize(sum / count)`` once per epoch.
Values with more axes than one (a sequence model's per-token numbers) are averaged over the extra axes first.

``Learner(..., metrics=[accuracy, rmse, my_fn])``: a plain function ``(preds, y) -> per-example values``
is a metric named after it; names work too: ``metrics=["accuracy", "f1", "roc_auc"]``.

Metrics that are not means of per-example values (:class:`AccumulatedMetric`) keep their own sufficient
statistics, summed on the device in the same way: :func:`f1`, :func:`precision` and :func:`recall` a confusion
matrix, :func:`roc_auc` histograms of the scores. Each is read back once per epoch, with the loss.

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
import numpy as np


@dataclass(frozen=True)
class Metric:
    """``name``, ``fn(preds, y) -> values`` (one per example) and ``finalize(mean) -> reported value``."""
    name: str
    fn: Callable[[jax.Array, jax.Array], jax.Array]
    finalize: Callable[[float], float] = field(default=lambda mean: mean)

    def update(self, preds: jax.Array, y: jax.Array, weight: jax.Array) -> jax.Array:
        """This batch's sum of the per-example values ``fn(preds, y)`` times ``weight`` (0 for padding examples),
        summed over the epoch on the device; ``preds`` are the model's outputs, ``y`` the targets."""
        return (per_example(self.fn(preds, y), y, self.name) * weight).sum()

    def result(self, total: np.ndarray, count: float) -> float:
        """The reported value: ``finalize(total / count)``, from the epoch's ``total`` (the sum of the weighted
        values) and ``count`` (the sum of the weights)."""
        return float(self.finalize(float(total) / max(count, 1.0)))


@dataclass(frozen=True)
class AccumulatedMetric:
    """A metric that is not a mean of per-example values (F1, AUC): ``update(preds, y, weight)`` returns this
    batch's sufficient statistics as one array (a confusion matrix, histograms), summed over the epoch on the
    device like the other sums; ``compute(total) -> value`` runs once per epoch on the host. ``name`` heads its
    column in the epoch table."""
    name: str
    update: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
    compute: Callable[[np.ndarray], float]

    def result(self, total: np.ndarray, count: float) -> float:
        """The reported value: ``compute(total)`` from the epoch's summed statistics (``count`` is not used)."""
        return float(self.compute(np.asarray(total, np.float64)))


AnyMetric = Metric | AccumulatedMetric


def per_example(values: jax.Array, y: jax.Array, name: str = "metric") -> jax.Array:
    """``values`` (one per example, or one per target position: ``y``'s shape) averaged to one per example.
    Any other shape — (B, C) from forgetting an argmax, (B, B) from broadcasting (B, 1) against (B,) — is refused:
    its mean would be a meaningless number."""
    values = jnp.asarray(values, jnp.float32)
    batch = y.shape[0]
    if values.shape not in ((batch,), tuple(y.shape)):
        raise ValueError(f"metric {name!r} must return one value per example, shape ({batch},), or one per target "
                         f"position, the labels' shape {tuple(y.shape)}; got shape {tuple(values.shape)}")
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
"""The fraction of examples whose largest output (``preds.argmax(-1)``) is the label."""
mse = Metric("mse", _squared_error)
"""Mean squared error ``mean((preds - y)**2)``."""
rmse = Metric("rmse", _squared_error, math.sqrt)
"""Root mean squared error ``sqrt(mean((preds - y)**2))``: the square root of the whole epoch's MSE."""
mae = Metric("mae", _absolute_error)
"""Mean absolute error ``mean(|preds - y|)``."""
perplexity = Metric("perplexity", _nll, lambda mean: math.exp(min(mean, 700.0)))  # exp of the mean token NLL
"""``exp`` of the mean negative log-likelihood of the targets under ``softmax(preds)`` (per token for a sequence
model): a model as unsure as a uniform choice among ``k`` tokens scores ``k``."""


# ------------------------------------------------------------------ from a confusion matrix

def _flat(preds: jax.Array, y: jax.Array, weight: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-position logits (N, C), labels (N,) and weights (N,): a sequence's steps share their example's."""
    w = jnp.broadcast_to(weight.reshape(weight.shape + (1,) * (y.ndim - 1)), y.shape)
    return preds.reshape(-1, preds.shape[-1]).astype(jnp.float32), y.reshape(-1), w.reshape(-1)


def confusion_matrix(preds: jax.Array, y: jax.Array, weight: jax.Array) -> jax.Array:
    """(C, C) counts of the batch weighted by ``weight``, rows the true class ``y`` and columns the predicted one
    (``preds.argmax(-1)``; a sequence's positions each count, with their example's weight)."""
    logits, y, w = _flat(preds, y, weight)
    n = logits.shape[-1]
    return (jax.nn.one_hot(y, n) * w[:, None]).T @ jax.nn.one_hot(logits.argmax(-1), n)


def _averaged(per_class: np.ndarray, cm: np.ndarray, average: str, micro: float) -> float:
    support = cm.sum(1)
    seen = (support + cm.sum(0)) > 0  # as scikit-learn: the classes met in the targets or the predictions
    if average == "macro":
        return float(per_class[seen].mean()) if seen.any() else 0.0
    if average == "weighted":
        return float((per_class * support).sum() / max(support.sum(), 1e-300))
    if average == "micro":
        return micro
    return float(per_class[1])  # binary: the positive class, 1


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)  # 0 where undefined, as scikit-learn's default


def _from_confusion(name: str, score: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
                    average: str) -> AccumulatedMetric:
    if average not in ("macro", "micro", "weighted", "binary"):
        raise ValueError(f"average must be 'macro', 'micro', 'weighted' or 'binary', got {average!r}")

    def compute(cm: np.ndarray) -> float:
        tp, predicted, actual = np.diag(cm), cm.sum(0), cm.sum(1)
        if average == "binary" and cm.shape[0] != 2:
            raise ValueError(f"{name}(average='binary') needs two classes, the model has {cm.shape[0]}")
        micro = float(score(tp.sum(keepdims=True), predicted.sum(keepdims=True), actual.sum(keepdims=True))[0])
        return _averaged(score(tp, predicted, actual), cm, average, micro)
    return AccumulatedMetric(name if average == "macro" else f"{name}_{average}", confusion_matrix, compute)


def _precision(tp, predicted, actual):
    return _ratio(tp, predicted)


def _recall(tp, predicted, actual):
    return _ratio(tp, actual)


def _f1(tp, predicted, actual):
    return _ratio(2 * tp, predicted + actual)  # = 2 P R / (P + R)


def precision(average: str = "macro") -> AccumulatedMetric:
    """Precision ``TP / (TP + FP)`` per class from the epoch's confusion matrix, averaged as scikit-learn's
    ``average=`` (``'macro'``: over the classes seen; ``'micro'``, ``'weighted'`` by support, ``'binary'``:
    class 1)."""
    return _from_confusion("precision", _precision, average)


def recall(average: str = "macro") -> AccumulatedMetric:
    """Recall ``TP / (TP + FN)`` per class from the epoch's confusion matrix, averaged over the classes as
    ``average`` says (the values of :func:`precision`'s)."""
    return _from_confusion("recall", _recall, average)


def f1(average: str = "macro") -> AccumulatedMetric:
    """F1 ``2 TP / (2 TP + FP + FN)`` (the harmonic mean of precision and recall) per class from the epoch's
    confusion matrix, averaged over the classes as ``average`` says (the values of :func:`precision`'s):
    macro-F1 weighs every class alike."""
    return _from_confusion("f1", _f1, average)


# ------------------------------------------------------------------ ROC AUC from histograms

AUC_BINS, AUC_LOGIT_RANGE = 4096, 20.0


def _score_histograms(preds: jax.Array, y: jax.Array, weight: jax.Array, bins: int) -> jax.Array:
    """(C, 2, bins) weighted counts of each class's one-vs-rest log-odds for the negatives (0) and positives (1).

    Binned on the log-odds rather than the probability so confident predictions (p near 0 or 1) still fall in
    distinct bins; a monotone map leaves the AUC, a statistic of ranks, unchanged."""
    logits, y, w = _flat(preds, y, weight)
    if logits.shape[-1] == 1:  # one logit: a binary classifier's log-odds, positives labelled 1
        logits = jnp.concatenate([jnp.zeros_like(logits), logits], -1)
    n = logits.shape[-1]
    logp = jax.nn.log_softmax(logits)
    log_odds = logp - jnp.log(-jnp.expm1(jnp.minimum(logp, -1e-7)))  # log p - log(1 - p)
    edges = jnp.clip((log_odds + AUC_LOGIT_RANGE) / (2 * AUC_LOGIT_RANGE) * bins, 0, bins - 1).astype(jnp.int32)
    positive = jax.nn.one_hot(y, n)                                        # (N, C)
    where = jax.nn.one_hot(edges, bins) * w[:, None, None]                 # (N, C, bins)
    return jnp.stack([((1 - positive)[..., None] * where).sum(0), (positive[..., None] * where).sum(0)], 1)


def _auc(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each class's P(score of a positive > score of a negative) + ½ P(tie), ties being the same bin."""
    neg, pos = hist[:, 0], hist[:, 1]
    below = np.cumsum(neg, -1) - neg
    pairs = neg.sum(-1) * pos.sum(-1)
    return _ratio((pos * (below + 0.5 * neg)).sum(-1), pairs), pairs > 0


def roc_auc(bins: int = AUC_BINS) -> AccumulatedMetric:
    """Area under the ROC curve, accumulated on the device as histograms of the scores (``bins`` bins of the
    log-odds in ±20): exact up to pairs that share a bin. Two classes (or one logit): the AUC of class 1;
    more: one-vs-rest, averaged over the classes present (scikit-learn's ``multi_class='ovr'``, macro)."""
    def compute(hist: np.ndarray) -> float:
        auc, present = _auc(hist)
        if hist.shape[0] == 2:
            return float(auc[1])
        return float(auc[present].mean()) if present.any() else float("nan")
    return AccumulatedMetric("roc_auc", lambda p, y, w: _score_histograms(p, y, w, bins), compute)


# ------------------------------------------------------------------ by name

def _named() -> dict[str, Callable[[], AnyMetric]]:
    return {"accuracy": lambda: accuracy, "mse": lambda: mse, "rmse": lambda: rmse, "mae": lambda: mae,
            "perplexity": lambda: perplexity, "f1": f1, "precision": precision, "recall": recall,
            "roc_auc": roc_auc, "auc": roc_auc}


def as_metric(m: AnyMetric | Callable | str) -> AnyMetric:
    """A metric from ``m``: a :class:`Metric` / :class:`AccumulatedMetric`, a function ``(preds, y) -> per-example
    values`` (named after it), or a name: ``'accuracy'``, ``'mse'``, ``'rmse'``, ``'mae'``, ``'perplexity'``,
    ``'f1'`` / ``'precision'`` / ``'recall'`` (macro averages), ``'roc_auc'`` (or ``'auc'``)."""
    if isinstance(m, (Metric, AccumulatedMetric)):
        return m
    if isinstance(m, str):
        named = _named()
        if m.lower() not in named:
            raise ValueError(f"unknown metric name {m!r}: known names are {', '.join(map(repr, named))}; "
                             f"or pass a function (preds, y) -> one value per example")
        return named[m.lower()]()
    if callable(m):
        return Metric(getattr(m, "__name__", "metric"), m)
    raise TypeError(f"a metric is a name such as 'accuracy', a jaxlearn.metrics.Metric or a function "
                    f"(preds, y) -> values, got {m!r}")


def as_metrics(metrics: Sequence[AnyMetric | Callable | str]) -> tuple[AnyMetric, ...]:
    """:func:`as_metric` of each of ``metrics`` (or of one metric given alone); their names must be distinct and
    neither ``'loss'`` nor ``'count'``, the epoch's other sums."""
    if isinstance(metrics, (str, Metric, AccumulatedMetric)) or callable(metrics):
        metrics = [metrics]
    out = tuple(as_metric(m) for m in metrics)
    names = [m.name for m in out]
    if len(set(names)) != len(names) or {"loss", "count"} & set(names):
        raise ValueError(f"metric names must be distinct and not 'loss' or 'count', got {names}")
    return out


def batch_sums(metrics: Sequence[AnyMetric], preds: jax.Array, y: jax.Array, losses: jax.Array,
               weight: jax.Array) -> dict[str, jax.Array]:
    """One batch's sums, weighted by ``weight``: of the per-example ``losses``, the weights themselves
    (``'count'``), and every one of ``metrics``' statistics of ``preds`` against ``y`` (by name)."""
    sums = {"loss": (losses * weight).sum(), "count": weight.sum()}
    for m in metrics:
        sums[m.name] = jnp.asarray(m.update(preds, y, weight), jnp.float32)
    return sums


def sums_template(metrics: Sequence[AnyMetric], preds: jax.ShapeDtypeStruct, y: jax.Array) -> tuple:
    """``((name, shape), ...)`` of the epoch's running sums for ``metrics`` on outputs shaped like ``preds`` and
    targets like ``y`` (only shapes and dtypes are read); hashable, for :func:`jaxlearn.prepare.epoch_start`."""
    y2 = jax.ShapeDtypeStruct((2, *y.shape[1:]), y.dtype)
    p2 = jax.ShapeDtypeStruct((2, *preds.shape[1:]), preds.dtype)
    w = jax.ShapeDtypeStruct((2,), jnp.float32)
    shapes = jax.eval_shape(lambda p, t, w: batch_sums(metrics, p, t, w, w), p2, y2, w)
    return tuple((name, tuple(s.shape)) for name, s in shapes.items())


def report(metrics: Sequence[AnyMetric], sums: dict) -> dict[str, float]:
    """An epoch's numbers from its host-side ``sums`` (:func:`batch_sums` added up): the mean loss and the result
    of each of ``metrics``, by name."""
    count = max(float(sums["count"]), 1.0)
    out = {"loss": float(sums["loss"]) / count}
    for m in metrics:
        out[m.name] = m.result(sums[m.name], count)
    return out


# ------------------------------------------------------------------ how sure is an accuracy

Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal (the lecture's 1.96)


def accuracy_ci_halfwidth(p: float, n: int, z: float = Z_95) -> float:
    """``z * sqrt(p (1 - p) / n)``: half-width of the normal-approximation confidence interval of an accuracy
    ``p`` measured on ``n`` test examples (``z``: the normal quantile, 1.96 for 95%)."""
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
    """``'92.51% ± 0.52% (95% CI, n=10000)'``: the accuracy ``p`` measured on ``n`` examples with its confidence
    interval (:func:`accuracy_ci_halfwidth`, quantile ``z``), as every accuracy in the experiments is reported."""
    return f"{100 * p:.2f}% ± {100 * accuracy_ci_halfwidth(p, n, z):.2f}% (95% CI, n={n})"
