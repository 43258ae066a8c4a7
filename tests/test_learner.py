from functools import partial

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest

from jaxlearn.callback import Callback, CancelBatchException, CancelEpochException, CancelFitException
from jaxlearn.callbacks import BatchTransformCB, MetricsCB, ParamSchedulerCB, SingleBatchCB
from jaxlearn.data import DataLoaders, normalize
from jaxlearn.learner import Learner
from jaxlearn.losses import cross_entropy
from jaxlearn.vision import get_model


class TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def tiny_learner(tiny_data, bs=16, **kw):
    x, y = tiny_data
    dls = DataLoaders.from_arrays((x, y), (x, y), bs)
    return Learner(TinyNet(), dls, optimizer=optax.sgd, lr=0.1, **kw)


class Events(Callback):
    """Records every callback event; optionally raises an exception at one of them."""
    def __init__(self, log, tag="", raise_at=None, exc=None, order=0):
        self.log, self.tag, self.raise_at, self.exc, self.order = log, tag, raise_at, exc, order

    def __getattr__(self, name):
        if name.startswith(("before_", "after_", "cleanup_")):
            def record(learn):
                self.log.append(self.tag + name)
                if name == self.raise_at and (name != "before_batch" or learn.training):
                    self.raise_at = None  # once
                    raise self.exc()
            return record
        raise AttributeError(name)


def test_callbacks_run_in_order(tiny_data):
    log = []
    learn = tiny_learner(tiny_data, callbacks=[Events(log, "B", order=2), Events(log, "A", order=1)])
    learn.fit(1, callbacks=[SingleBatchCB()])
    assert log[:4] == ["Abefore_fit", "Bbefore_fit", "Abefore_epoch", "Bbefore_epoch"]
    assert log[-2:] == ["Acleanup_fit", "Bcleanup_fit"]


def test_cancel_batch_skips_the_step_but_cleans_up(tiny_data):
    log = []
    learn = tiny_learner(tiny_data, callbacks=[Events(log, raise_at="before_batch", exc=CancelBatchException)])
    learn.fit(1, valid=False)
    first = log.index("before_batch")
    assert log[first:first + 3] == ["before_batch", "after_cancel_batch", "cleanup_batch"]
    assert int(learn.state.step) == learn.dls.train.n_batches - 1  # one batch skipped


def test_cancel_epoch_moves_on_to_the_next_epoch(tiny_data):
    log = []
    learn = tiny_learner(tiny_data, callbacks=[Events(log, raise_at="after_batch", exc=CancelEpochException)])
    learn.fit(2, valid=False)
    assert log.count("after_cancel_epoch") == 1 and log.count("cleanup_epoch") == 2
    assert log.count("after_epoch") == 1 and "after_fit" in log
    assert int(learn.state.step) == 1 + learn.dls.train.n_batches


def test_cancel_fit_runs_cleanup_not_after_fit(tiny_data):
    log = []
    learn = tiny_learner(tiny_data, callbacks=[Events(log, raise_at="after_epoch", exc=CancelFitException)])
    learn.fit(3)
    assert "after_cancel_fit" in log and log[-1] == "cleanup_fit" and "after_fit" not in log
    assert log.count("before_epoch") == 1


def test_exceptions_other_than_cancel_propagate_after_cleanup(tiny_data):
    log = []
    learn = tiny_learner(tiny_data, callbacks=[Events(log, raise_at="after_batch", exc=RuntimeError)])
    with pytest.raises(RuntimeError):
        learn.fit(1)
    assert log[-3:] == ["cleanup_batch", "cleanup_epoch", "cleanup_fit"]


def test_compiles_once_across_epochs_fits_and_lr_changes(tiny_data):
    learn = tiny_learner(tiny_data, callbacks=[MetricsCB(show=False), BatchTransformCB(normalize(0.4, 0.3))])
    learn.fit(2)
    traces = learn.n_traces
    assert traces == 2  # one train call, one eval call
    learn.fit(3, lr=0.05)
    assert learn.n_traces == traces, "epochs and a new lr must not retrace"
    schedule = ParamSchedulerCB("learning_rate", lambda n: optax.linear_schedule(0.1, 0.01, n))
    learn.fit(3, callbacks=[schedule])
    assert learn.n_traces == traces + 1, "a schedule enters the train call (the eval call is shared)"
    learn.fit(3, callbacks=[schedule])
    assert learn.n_traces == traces + 1, "the same schedule over the same length reuses it"
    assert learn.get_hyper("learning_rate") == pytest.approx(optax.linear_schedule(0.1, 0.01, 3 * 6)(3 * 6 - 1))


def test_steps_per_call_gives_the_same_training(tiny_data):
    """Scanning 4 steps per call (with a ragged last call) equals one step per call."""
    a = tiny_learner(tiny_data, bs=8)            # 12 batches
    b = tiny_learner(tiny_data, bs=8, steps_per_call=5)  # calls of 5, 5, 2
    a.fit(2, valid=False)
    b.fit(2, valid=False)
    assert int(a.state.step) == int(b.state.step) == 24
    chex.assert_trees_all_close(a.state.params, b.state.params, atol=1e-6)
    assert b.n_traces == 2  # the 5-step call and the 2-step remainder, each once


def test_metrics_weight_out_padding(tiny_data):
    """Validation loss/accuracy with a padded last batch equal a direct computation over the whole set."""
    learn = tiny_learner(tiny_data, bs=20)  # valid batch 40: 96 = 40 + 40 + 16 (+24 padding)
    learn.fit(1, callbacks=[MetricsCB(show=False)])
    x, y = tiny_data
    logits = learn.predict(x, raw=True)
    expected_loss = float(cross_entropy(jnp.asarray(logits), jnp.asarray(y)).mean())
    got = learn.evaluate()
    assert got["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert got["accuracy"] == pytest.approx(float((logits.argmax(1) == y).mean()))


def test_bad_inputs_fail_before_training(tiny_data):
    x, y = tiny_data
    with pytest.raises(ValueError, match="train labels span 1..5 but the model has 3 outputs"):
        Learner(TinyNet(), DataLoaders.from_arrays((x, y * 2 + 1), (x, y), 16))
    with pytest.raises(ValueError, match="lr must be a finite positive number, got nan"):
        tiny_learner(tiny_data).fit(1, lr=float("nan"))
    with pytest.raises(ValueError, match="lr must be"):
        Learner(TinyNet(), DataLoaders.from_arrays((x, y), (x, y), 16), lr=-1.0)
    with pytest.raises(ValueError, match="NHWC images with 1 channel"):
        Learner(get_model(), DataLoaders.from_arrays((x[..., 0], y), (x[..., 0], y), 16))
    with pytest.raises(KeyError, match="no injected hyperparameter named .*momentum"):
        tiny_learner(tiny_data).set_hyper("momentum", 0.9)


def test_cnn_shapes():
    model = get_model()
    x = jnp.zeros((2, 28, 28, 1))
    variables = model.init(jax.random.key(0), x)
    out, st = model.apply(variables, x, capture_intermediates=lambda m, _: isinstance(m, nn.Conv),
                          mutable=["intermediates"])
    chex.assert_shape(out, (2, 10))
    sizes = [v["__call__"][0].shape[1] for v in jax.tree.leaves(st["intermediates"], is_leaf=lambda d: "__call__" in d)]
    assert sorted(sizes, reverse=True) == [14, 7, 4, 2, 1]


def test_short_fit_on_fashion_mnist_learns(fashion_small):
    from jaxlearn.nn import kaiming_normal
    from jaxlearn.nn import GeneralRelu
    train, test = fashion_small
    dls = DataLoaders.from_arrays(train, test, 64, seed=0)
    model = get_model(partial(GeneralRelu, leak=0.1, sub=0.4), kernel_init=kaiming_normal(a=0.1))
    metrics = MetricsCB(show=False)
    learn = Learner(model, dls, optimizer=partial(optax.sgd, momentum=0.9), lr=0.05,
                    callbacks=[metrics, BatchTransformCB(normalize(0.28, 0.35))])
    before = learn.evaluate()
    learn.fit(3)
    after = metrics.history[-1]
    assert before["loss"] > 2.0 and after["valid_loss"] < 0.6 * before["loss"]
    assert after["valid_accuracy"] > 0.65


def test_compiler_options_reach_xla(tiny_data):
    """``compiler_options`` go to XLA with the train and eval calls: an unknown one fails the first fit, a real
    one trains to the same losses (makemore's CPU options switch YNNPACK off: the same numbers within rounding)."""
    with pytest.raises(Exception, match="no_such_option"):
        tiny_learner(tiny_data, compiler_options={"no_such_option": True}).fit(1)
    losses = {}
    for name, options in [("default", None), ("ynn off", {"xla_cpu_experimental_ynn_fusion_type": ""})]:
        learn = tiny_learner(tiny_data, compiler_options=options, callbacks=[MetricsCB(show=False)])
        learn.fit(2)
        losses[name] = learn.epoch_metrics["loss"]
    assert losses["ynn off"] == pytest.approx(losses["default"], rel=1e-5)
