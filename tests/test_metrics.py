"""Metrics with their own sufficient statistics (a confusion matrix for F1 / precision / recall, score histograms
for AUC), summed on the device over an epoch, checked against hand computations; metrics by name."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax.linen as nn

from _tiny import tiny_arrays
from jaxlearn import metrics as M
from jaxlearn.data import DataLoaders
from jaxlearn.learner import Learner


def _epoch(metric, logits, y, batch=7):
    """The metric's result after summing its statistics batch by batch (the last batch padded, weight 0)."""
    total = None
    for i in range(0, len(y), batch):
        p, t = logits[i:i + batch], y[i:i + batch]
        w = np.ones(batch, np.float32)
        w[len(t):] = 0
        pad = batch - len(t)
        p = np.concatenate([p, np.zeros((pad, *p.shape[1:]), p.dtype)])
        t = np.concatenate([t, np.zeros((pad, *t.shape[1:]), t.dtype)])
        s = metric.update(jnp.asarray(p), jnp.asarray(t), jnp.asarray(w))
        total = s if total is None else total + s
    return metric.result(np.asarray(total), float(len(y)))


def _by_hand(pred, y, n):
    tp = np.array([np.sum((pred == c) & (y == c)) for c in range(n)], float)
    fp = np.array([np.sum((pred == c) & (y != c)) for c in range(n)], float)
    fn = np.array([np.sum((pred != c) & (y == c)) for c in range(n)], float)
    prec = np.divide(tp, tp + fp, out=np.zeros(n), where=tp + fp > 0)
    rec = np.divide(tp, tp + fn, out=np.zeros(n), where=tp + fn > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(n), where=prec + rec > 0)
    seen = (tp + fp + fn) > 0
    return prec, rec, f1, seen


def test_confusion_matrix_counts_and_ignores_padding():
    logits = jnp.eye(3)[jnp.array([0, 1, 1, 2])]
    cm = M.confusion_matrix(logits, jnp.array([0, 1, 2, 2]), jnp.array([1.0, 1.0, 1.0, 0.0]))
    chex.assert_trees_all_close(cm, jnp.array([[1, 0, 0], [0, 1, 0], [0, 1, 0]], jnp.float32))


def test_f1_precision_recall_match_the_formulas():
    rng = np.random.default_rng(0)
    n, c = 53, 4
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)).astype(np.float32)
    logits[np.arange(n), y] += 1.0  # better than chance, not perfect
    pred = logits.argmax(-1)
    prec, rec, f1, seen = _by_hand(pred, y, c)
    assert _epoch(M.f1(), logits, y) == pytest.approx(f1[seen].mean(), abs=1e-6)
    assert _epoch(M.precision(), logits, y) == pytest.approx(prec[seen].mean(), abs=1e-6)
    assert _epoch(M.recall(), logits, y) == pytest.approx(rec[seen].mean(), abs=1e-6)
    support = np.bincount(y, minlength=c)
    assert _epoch(M.f1("weighted"), logits, y) == pytest.approx((f1 * support).sum() / n, abs=1e-6)
    assert _epoch(M.f1("micro"), logits, y) == pytest.approx(np.mean(pred == y), abs=1e-6)  # micro-F1 = accuracy


def test_macro_f1_is_not_accuracy_on_imbalanced_classes():
    y = np.array([0] * 90 + [1] * 10)
    logits = np.zeros((100, 2), np.float32)
    logits[:, 0] = 1.0  # always predicts the majority class
    assert _epoch(M.accuracy, logits, y) == pytest.approx(0.9)
    assert _epoch(M.f1(), logits, y) == pytest.approx((2 * 90 / 190 + 0.0) / 2, abs=1e-6)
    assert _epoch(M.f1("binary"), logits, y) == 0.0


def _exact_auc(scores, positive):
    pos, neg = scores[positive], scores[~positive]
    wins = sum((p > q) + 0.5 * (p == q) for p, q in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_roc_auc_binary_matches_the_pairwise_definition():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    logit = rng.normal(size=200) + 1.5 * y
    two = np.stack([np.zeros(200), logit], 1).astype(np.float32)
    expected = _exact_auc(logit, y == 1)
    assert _epoch(M.roc_auc(), two, y) == pytest.approx(expected, abs=2e-3)
    assert _epoch(M.roc_auc(), logit[:, None].astype(np.float32), y) == pytest.approx(expected, abs=2e-3)


def test_roc_auc_multiclass_is_the_one_vs_rest_mean():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 150)
    logits = (rng.normal(size=(150, 3)) + 2.0 * np.eye(3)[y]).astype(np.float32)
    probs = np.asarray(jax.nn.softmax(logits))
    expected = np.mean([_exact_auc(probs[:, c], y == c) for c in range(3)])
    assert _epoch(M.roc_auc(), logits, y) == pytest.approx(expected, abs=3e-3)


def test_metrics_by_name():
    assert M.as_metric("accuracy") is M.accuracy and M.as_metric("RMSE") is M.rmse
    assert [m.name for m in M.as_metrics(["f1", "precision", "recall", "auc", "mae"])] == \
        ["f1", "precision", "recall", "roc_auc", "mae"]
    assert M.as_metrics("accuracy") == (M.accuracy,)
    with pytest.raises(ValueError, match="unknown metric name 'f2'.*'f1'"):
        M.as_metric("f2")


class Linear(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x.reshape(len(x), -1))


def test_learner_reports_accumulated_metrics_for_the_whole_epoch():
    x, y = tiny_arrays(96)
    loaders = DataLoaders.from_arrays((x[:64], y[:64]), (x[64:], y[64:]), 16)  # valid: 2 batches
    learn = Learner(Linear(), loaders, metrics=["accuracy", "f1", "roc_auc"], lr=0.1)
    learn.fit(2)
    got = learn.evaluate()
    x, y = np.asarray(loaders.valid.x), np.asarray(loaders.valid.y)
    logits = learn.predict(x, raw=True)
    pred = logits.argmax(-1)
    _, _, f1, seen = _by_hand(pred, y, logits.shape[-1])
    assert got["accuracy"] == pytest.approx(np.mean(pred == y), abs=1e-6)
    assert got["f1"] == pytest.approx(f1[seen].mean(), abs=1e-5)
    assert 0.5 < got["roc_auc"] <= 1.0
