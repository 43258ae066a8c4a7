"""Failures are loud and nothing is silently wrong: a poisoned norm statistic, an early failure in a fit, bad
inputs to predict, and a resumed fit's metrics history."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn.callback import Callback
from jaxlearn.callbacks import CheckpointCB, EarlyStoppingCB, LayerGroupsCB, MetricsCB, NaNGuardCB, ProgressCB
from jaxlearn.data import DataLoaders
from jaxlearn.learner import Learner
from jaxlearn.trees import tree_all_finite


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


class OverflowingStats(Net):
    """Finite loss, gradients and params, but a running statistic that overflows float32 on the 2nd step."""
    @nn.compact
    def __call__(self, x, train: bool = True):
        stat = self.variable("batch_stats", "var", jnp.ones, ())
        if train and not self.is_initializing():
            stat.value = stat.value * 1e20
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def learner(tiny_data, model=None, **kw):
    x, y = tiny_data
    return Learner(model or Net(), DataLoaders.from_arrays((x, y), (x, y), 16), optimizer=optax.sgd, **kw)


def test_nan_guard_checks_norm_statistics_and_optimizer_state(tiny_data):
    guard = NaNGuardCB()
    learn = learner(tiny_data, OverflowingStats(), callbacks=[guard])
    learn.fit(2)
    assert guard.bad is not None and guard.bad["step"] == 1
    assert guard.bad["what"] == ["norm statistics or optimizer state"]
    assert bool(tree_all_finite((learn.state.params, learn.state.model_state, learn.state.opt_state)))
    assert int(learn.state.step) == 1 and float(learn.state.model_state["batch_stats"]["var"]) == np.float32(1e20)


class FailsBeforeFit(Callback):
    order = -10  # before every other callback's before_fit

    def before_fit(self, learn):
        raise ValueError("the real error")


def test_an_early_failure_is_reported_as_itself(tiny_data, tmp_path):
    """cleanup_fit hooks are safe when their before_fit never ran: the first error is the one raised."""
    learn = learner(tiny_data)
    cbs = [FailsBeforeFit(), ProgressCB(), MetricsCB(), EarlyStoppingCB(), LayerGroupsCB(restore=True),
           CheckpointCB(tmp_path / "ckpt")]
    with pytest.raises(ValueError, match="the real error"):
        learn.fit(1, callbacks=cbs)
    with pytest.raises(ValueError, match="n_epochs must be a positive integer, got 0"):
        learn.fit(0, callbacks=[ProgressCB(), CheckpointCB(tmp_path / "ckpt")])
    assert int(learn.state.step) == 0


def test_predict_checks_inputs_against_the_training_data(tiny_data):
    x, _ = tiny_data
    learn = learner(tiny_data)
    expected = learn.predict(x[:5], raw=True)
    np.testing.assert_array_equal(learn.predict(x[:5].tolist(), raw=True), expected)  # a Python list
    np.testing.assert_allclose(learn.predict(x[0], raw=True), expected[0], rtol=1e-5)  # one example, no batch axis
    np.testing.assert_allclose(learn.predict(x[:5] / 255.0, raw=True), expected, atol=1e-6)  # floats already in [0, 1]
    with pytest.raises(ValueError, match=r"uint8 .*floats in 0\.\.2\d\d"):
        learn.predict(x[:5].astype(np.float32), raw=True)  # 0..255 floats would skip the /255 silently
    with pytest.raises(ValueError, match="no inputs"):
        learn.predict(x[:0], raw=True)
    with pytest.raises(ValueError, match=r"shape \(4, 4, 1\)"):
        learn.predict(np.zeros((2, 5, 5, 1), np.uint8))


class StopAt(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def before_epoch(self, learn):
        if learn.training and learn.epoch == self.epoch:
            raise KeyboardInterrupt


def test_a_resumed_fit_keeps_the_whole_metrics_history(tiny_data, tmp_path):
    full = MetricsCB(show=False)
    learner(tiny_data).fit(3, callbacks=[full])
    with pytest.raises(KeyboardInterrupt):
        learner(tiny_data).fit(3, callbacks=[MetricsCB(show=False), CheckpointCB(tmp_path), StopAt(2)])
    resumed = MetricsCB(show=False)
    learner(tiny_data).fit(3, callbacks=[resumed, CheckpointCB(tmp_path, resume=True)])
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in h]  # noqa: E731
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2]
    assert strip(resumed.history) == strip(full.history)


def test_no_transfer_guard_violation_in_a_resumed_or_plain_fit_of_a_mesh_free_learner(tiny_data):
    learn = learner(tiny_data, callbacks=[MetricsCB(show=False)])
    with jax.transfer_guard("disallow"):
        learn.fit(2)
    assert learn.epochs_done == 2
