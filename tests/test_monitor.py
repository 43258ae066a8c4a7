import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn.callback import Callback
from jaxlearn.callbacks import (EarlyStoppingCB, GradNormCB, MetricsCB, NaNGuardCB, SaveBestCB, SmoothedLossCB,
                                nan_check, smooth)
from jaxlearn.data import DataLoaders
from jaxlearn.learner import Learner
from jaxlearn.losses import cross_entropy
from jaxlearn.metrics import accuracy_ci, accuracy_ci_halfwidth, format_accuracy
from jaxlearn.trees import tree_all_finite


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.relu(nn.Dense(8)(x.reshape(x.shape[0], -1)))
        return nn.Dense(3)(x)


def make_learner(x, y, bs=16, lr=0.1, **kw):
    return Learner(Net(), DataLoaders.from_arrays((x, y), (x, y), bs), optimizer=optax.sgd, lr=lr, **kw)


def finite(tree):
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


class SeeBatch(Callback):
    """Per step: the loss gradients of the batch recomputed outside the Learner, and whether it holds a NaN."""
    order = -10  # before NaNGuardCB, which cancels in after_batch

    def in_step(self, ctx):
        grads = jax.grad(lambda p: ((cross_entropy(ctx.state.apply_fn({"params": p}, ctx.x, train=True), ctx.y)
                                     * ctx.weight).sum() / ctx.weight.sum()))(ctx.params)
        return {"global_norm": optax.global_norm(grads), "nan_input": jnp.isnan(ctx.x).any()}

    def before_fit(self, learn):
        self.outs = []

    def after_batch(self, learn):
        if learn.training:
            self.outs.append(jax.device_get(learn.step_outputs[self]))

    def get(self, k):
        return np.concatenate([o[k] for o in self.outs])


def test_grad_norm_is_optax_global_norm(tiny_data):
    x, y = tiny_data
    gn, see = GradNormCB(per_layer=True), SeeBatch()
    learn = make_learner(x, y, callbacks=[gn, see], steps_per_call=2)
    learn.fit(1, valid=False)
    assert gn.norms.shape == (learn.dls.train.n_batches,)
    np.testing.assert_allclose(gn.norms, see.get("global_norm"), rtol=1e-5)
    # the per-layer norms add up (in quadrature) to the global one
    layers = np.stack(list(gn.layer_norms.values()))
    np.testing.assert_allclose(np.sqrt((layers ** 2).sum(0)), gn.norms, rtol=1e-5)
    # and on the first batch it equals optax.global_norm of jax.grad at the initial params, batch from the step
    assert set(gn.layer_norms) == {"Dense_0/kernel", "Dense_0/bias", "Dense_1/kernel", "Dense_1/bias"}
    assert gn.plot() is not None


def nan_data(tiny_data, bad_example=50):
    x, y = tiny_data
    x = x.astype(np.float32) / 255
    x[bad_example, 0, 0, 0] = np.nan  # one poisoned example: its batch's loss and grads become NaN
    return x, y


@pytest.mark.parametrize("steps_per_call", [1, 4])
def test_nan_guard_stops_names_the_batch_and_keeps_a_finite_state(tiny_data, steps_per_call):
    x, y = nan_data(tiny_data)
    guard, see, metrics = NaNGuardCB(), SeeBatch(), MetricsCB(show=False)
    learn = make_learner(x, y, callbacks=[guard, see, metrics], steps_per_call=steps_per_call)
    learn.fit(3)
    bad_iter = int(np.argmax(see.get("nan_input")))  # the batch that holds the poisoned example
    assert guard.bad == {"epoch": 0, "iteration": bad_iter, "step": bad_iter, "what": ["loss", "gradients",
                                                                                       "parameters"]}
    assert f"epoch 0, iteration {bad_iter}" in guard.message and f"optimizer step {bad_iter}" in guard.message
    assert finite(learn.state.params) and finite(learn.state.opt_state)
    restored = (bad_iter // steps_per_call) * steps_per_call  # the state before the call holding the bad batch
    assert int(learn.state.step) == restored
    assert len(metrics.history) == 1 and "valid_loss" not in metrics.history[0]  # the fit stopped there


def test_nan_guard_checking_every_few_calls_and_huge_lr(tiny_data):
    x, y = tiny_data

    class Explode(nn.Module):  # exp makes a too-large lr overflow to inf within a few steps
        @nn.compact
        def __call__(self, x, train: bool = True):
            return jnp.exp(nn.Dense(3)(x.reshape(x.shape[0], -1)))

    guard = NaNGuardCB(every=3)
    learn = Learner(Explode(), DataLoaders.from_arrays((x, y), (x, y), 16), optimizer=optax.sgd, lr=1e4,
                    callbacks=[guard])
    learn.fit(5)
    assert guard.bad is not None and guard.bad["step"] < 5 * learn.dls.train.n_batches
    assert finite(learn.state.params)
    assert int(learn.state.step) <= guard.bad["step"]


def test_nan_guard_silent_when_healthy(tiny_data):
    x, y = tiny_data
    guard = NaNGuardCB(every=2)
    learn = make_learner(x, y, callbacks=[guard])
    learn.fit(1)
    assert guard.bad is None and guard.message is None
    assert int(learn.state.step) == learn.dls.train.n_batches


def test_nan_check_passes_healthy_flags_bugs_and_restores(tiny_data):
    x, y = tiny_data
    learn = make_learner(x, y)
    before = learn.state
    result = nan_check(learn, n_steps=3, verbose=False)
    assert result.ok and set(result.losses) == {0.0, 1e-12}
    assert all(len(v) == 3 for v in result.losses.values())
    assert learn.state is before and learn.get_hyper("learning_rate") == pytest.approx(0.1)
    np.testing.assert_allclose(result.losses[0.0], result.losses[1e-12], rtol=1e-4)

    bad = make_learner(*nan_data(tiny_data, bad_example=0), bs=32)
    result = nan_check(bad, n_steps=3, verbose=False)
    assert not result.ok and "bug" in str(result)
    with pytest.raises(FloatingPointError, match="bug"):
        nan_check(bad, n_steps=3, verbose=False, raise_error=True)
    assert finite(bad.state.params) and int(bad.state.step) == 0


def test_early_stopping_stops_and_restores_the_best(tiny_data):
    x, y = tiny_data
    stop, metrics = EarlyStoppingCB("valid_accuracy", patience=2, verbose=False), MetricsCB(show=False)
    learn = make_learner(x, y, callbacks=[stop, metrics])
    learn.set_hyper("learning_rate", 0.0)  # nothing learns: accuracy never improves after the first epoch
    learn.fit(6)
    assert stop.best_epoch == 0 and stop.stopped_epoch == 2 and len(metrics.history) == 3
    assert learn.state is stop.best_state
    stop2 = EarlyStoppingCB("valid_loss", patience=3)
    learn.fit(2, lr=0.1, callbacks=[stop2])  # improving: runs to the end
    assert stop2.stopped_epoch is None and stop2.best_epoch == 1
    with pytest.raises(ValueError):
        EarlyStoppingCB("loss")


def test_save_best_exports_the_best_epoch_and_ends_on_it(tiny_data, tmp_path):
    from jaxlearn.export import load_learner
    x, y = tiny_data
    best = SaveBestCB(tmp_path / "best", "valid_loss")
    seen = MetricsCB(show=False)
    learn = make_learner(x, y, lr=0.5, callbacks=[best, seen])
    learn.fit(4)
    losses = [row["valid_loss"] for row in seen.history]
    assert best.best_epoch is not None and best.saved and best.saved[-1] == best.best_epoch
    predictor = load_learner(tmp_path / "best")
    np.testing.assert_allclose(predictor.predict(x[:8], raw=True), learn.predict(x[:8], raw=True), atol=1e-6)
    assert learn.evaluate()["loss"] == pytest.approx(best.best, rel=1e-6)  # the Learner ends on the best epoch
    assert best.best == pytest.approx(min(losses), rel=1e-6) and losses[best.best_epoch] == best.best
    assert SaveBestCB(tmp_path, "valid_f1").watch.mode == "max"
    with pytest.raises(ValueError, match="SaveBestCB: monitor must look like"):
        SaveBestCB(tmp_path, "f1")


def test_smoothed_loss(tiny_data):
    np.testing.assert_allclose(smooth([2.0] * 5), 2.0)  # debiased: a constant stays constant
    v = np.array([1.0, 3.0, 2.0])
    avg, expected = 0.0, []
    for i, x in enumerate(v):
        avg = 0.98 * avg + 0.02 * x
        expected.append(avg / (1 - 0.98 ** (i + 1)))
    np.testing.assert_allclose(smooth(v), expected)
    x, y = tiny_data
    sl = SmoothedLossCB()
    learn = make_learner(x, y, callbacks=[sl], steps_per_call=3)
    learn.fit(2, valid=False)
    assert sl.raw.shape == (2 * learn.dls.train.n_batches,)
    np.testing.assert_allclose(sl.smoothed, smooth(sl.raw))
    assert sl.smoothed[-1] < sl.smoothed[0]


def test_tree_all_finite():
    assert bool(tree_all_finite({"a": jnp.ones(3), "b": jnp.arange(3)}))
    assert not bool(tree_all_finite({"a": jnp.array([1.0, jnp.inf])}))


def test_accuracy_ci_formula():
    for p, n in ((0.5, 100), (0.9, 1000), (0.925, 10_000)):
        assert accuracy_ci_halfwidth(p, n) == pytest.approx(1.96 * math.sqrt(p * (1 - p) / n), rel=1e-4)
    assert accuracy_ci_halfwidth(0.5, 100) == pytest.approx(0.098, abs=1e-3)  # the lecture's "±0.1"
    lo, hi = accuracy_ci(0.99, 100)
    assert hi == 1.0 and lo == pytest.approx(0.99 - 1.96 * math.sqrt(0.99 * 0.01 / 100), rel=1e-4)
    assert format_accuracy(0.925, 10_000) == "92.50% ± 0.52% (95% CI, n=10000)"
    with pytest.raises(ValueError):
        accuracy_ci_halfwidth(0.5, 0)
