"""The one compiled core: the train/eval calls without a Learner, schedules and metrics inside the step, carried
state, a fit with no host↔device transfer per batch, and the optimizer settings a user gives."""

from functools import partial

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn import metrics as M
from jaxlearn import prepare, step as S
from jaxlearn.optim import schedules
from jaxlearn.trees import copy_state
from jaxlearn.callbacks import ActivationStats, BatchTransformCB, MetricsCB, ParamSchedulerCB, ProgressCB, RecorderCB
from jaxlearn.data import ArrayDataset, DataLoaders, normalize, to_float
from jaxlearn.learner import Learner
from jaxlearn.nn import BatchNorm, GeneralRelu
from jaxlearn.vision import get_model


def test_train_and_eval_calls_train_the_lesson17_cnn_without_a_learner(fashion_small):
    (x, y), (xt, yt) = fashion_small
    x, y, xt, yt = map(jnp.asarray, (x, y, xt, yt))
    model = get_model(partial(GeneralRelu, leak=0.1, sub=0.4), norm=BatchNorm)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.2, momentum=0.9)
    state = S.create_train_state(model, tx, to_float(x[:2]), seed=0)
    tfm = S.compose_transforms([lambda v, training, key: normalize(0.28, 0.35)(v)])
    metrics = [M.accuracy]
    train_call = S.make_train_call(S.make_train_step(S.cross_entropy, metrics), to_float, tfm)
    eval_call = S.make_eval_call(S.make_eval_step(S.cross_entropy, metrics), to_float, tfm)
    names = (('loss', ()), ('count', ()), ('accuracy', ()))  # M.sums_template's form

    def evaluate(state):
        idx, w = ArrayDataset(xt, yt, 500).epoch_indices(0)
        acc, _ = eval_call(state, prepare.epoch_start(names)[0], (xt, yt), idx, w)
        return M.report(metrics, jax.device_get(acc))

    before = evaluate(state)
    idx, w = ArrayDataset(x, y, 50, shuffle=True).epoch_indices(0)
    acc, pos = prepare.epoch_start(names)
    origin = state.step
    for _ in range(idx.shape[0]):
        state, acc, pos, out = train_call(state, acc, (x, y), idx, w, pos, origin, n_steps=1)
    train = M.report(metrics, jax.device_get(acc))
    after = evaluate(state)
    assert int(state.step) == 40 and int(pos) == 40
    assert 0.4 < train["accuracy"] < after["accuracy"] and train["loss"] < before["loss"]
    assert before["accuracy"] < 0.2 and after["accuracy"] > 0.6, (before, after)
    assert after["loss"] < 0.6 * before["loss"]


def test_a_fit_with_schedules_metrics_progress_recorder_and_stats_makes_no_transfer_per_batch(tiny_data):
    x, y = tiny_data
    dls = DataLoaders.from_arrays((x, y), (x, y), 16)
    learn = Learner(get_model(nfs=(1, 4, 8), norm=BatchNorm), dls, optimizer=partial(optax.sgd, momentum=0.9),
                    callbacks=[MetricsCB(show=False), BatchTransformCB(normalize(0.4, 0.3))])
    recorder, stats = RecorderCB("learning_rate", "momentum"), ActivationStats(GeneralRelu)
    cbs = [ProgressCB(), recorder, stats,
           ParamSchedulerCB("learning_rate", lambda n: schedules.one_cycle(0.1, n)),
           ParamSchedulerCB("momentum", lambda n: schedules.one_cycle_momentum(n))]
    with jax.transfer_guard("disallow"):
        learn.fit(2, callbacks=cbs)
    n = 2 * dls.train.n_batches
    lr, mom = schedules.one_cycle(0.1, n), schedules.one_cycle_momentum(n)
    np.testing.assert_allclose(recorder.recs["learning_rate"], [lr(i) for i in range(n)], rtol=1e-6)
    np.testing.assert_allclose(recorder.recs["momentum"], [mom(i) for i in range(n)], rtol=1e-6)
    assert all(v["mean"].shape == (n,) for v in stats.stats.values()) and len(stats.stats) >= 2


def test_compilations_are_shared_by_callbacks_with_equal_signatures(tiny_data):
    x, y = tiny_data
    learn = Learner(get_model(nfs=(1, 4, 8)), DataLoaders.from_arrays((x, y), (x, y), 16))
    learn.fit(1, callbacks=[ActivationStats(GeneralRelu), BatchTransformCB(to_float)])
    traces = learn.n_traces
    learn.fit(1, callbacks=[ActivationStats(GeneralRelu), BatchTransformCB(to_float)])  # new, equal instances
    assert learn.n_traces == traces
    learn.fit(1, callbacks=[ActivationStats(GeneralRelu, bins=20), BatchTransformCB(to_float)])
    assert learn.n_traces == traces + 1


class Regressor(nn.Module):  # no `train` argument: the core passes it only to models that take it
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(x)[:, 0]


def test_regression_with_float_targets_and_device_metrics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32) + 3.0).astype(np.float32)
    dls = DataLoaders.from_arrays((x, y), (x[:100], y[:100]), 32)
    mse = lambda p, t: (p - t) ** 2  # noqa: E731  a user's function is a metric named after it
    learn = Learner(Regressor(), dls, loss_fn=lambda p, t: (p - t) ** 2, optimizer=optax.adam, lr=0.05,
                    metrics=[M.rmse, M.mae, mse])
    history = MetricsCB(show=False)
    learn.fit(20, callbacks=[history])
    last = history.history[-1]
    preds = learn.predict(x[:100], raw=True)
    assert last["valid_loss"] < 0.01 and last["valid_loss"] < history.history[0]["valid_loss"] / 20
    assert last["valid_rmse"] == pytest.approx(np.sqrt(np.mean((preds - y[:100]) ** 2)), rel=1e-4)
    assert last["valid_mae"] == pytest.approx(np.mean(np.abs(preds - y[:100])), rel=1e-4)
    assert last["valid_<lambda>"] == pytest.approx(last["valid_loss"], rel=1e-6)


def test_perplexity_and_per_token_metrics_of_a_sequence_model():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(4, 5, 7)), jnp.float32)
    y = jnp.asarray(np.random.default_rng(2).integers(0, 7, (4, 5)), jnp.int32)
    w = jnp.array([1.0, 1.0, 1.0, 0.0])
    losses = S.cross_entropy(logits, y)
    sums = M.batch_sums([M.perplexity, M.accuracy], logits, y, losses, w)
    got = M.report([M.perplexity, M.accuracy], jax.device_get(sums))
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], -1)[..., 0][:3]
    assert got["perplexity"] == pytest.approx(float(jnp.exp(nll.mean())), rel=1e-5)
    assert got["loss"] == pytest.approx(float(nll.mean()), rel=1e-5)
    assert got["accuracy"] == pytest.approx(float((logits.argmax(-1) == y)[:3].mean()))


class StatefulSum(nn.Module):
    """A toy stateful RNN: h ← tanh(w·h + x_t) over the batch's sequence, h carried to the next batch."""
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = self.variable("carry", "h", jnp.zeros, (x.shape[0], 1))
        w = self.param("w", nn.initializers.constant(0.5), ())
        state = h.value
        for t in range(x.shape[1]):
            state = jnp.tanh(w * state + x[:, t:t + 1])
        if self.is_mutable_collection("carry"):
            h.value = jax.lax.stop_gradient(state)
        return nn.Dense(2)(state)


def test_carried_state_feeds_the_next_batch_resets_each_epoch_and_stops_gradients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype(np.float32)  # 4 batches of 2 streams
    y = (rng.random(8) > 0.5).astype(np.int32)
    ds = ArrayDataset(x, y, 2, shuffle=False, drop_last=True, transform=lambda v: v)
    learn = Learner(StatefulSum(), DataLoaders(ds, ds), optimizer=optax.sgd, lr=0.0 + 1e-9)
    assert learn.state.model_state["carry"]["h"].shape == (2, 1)
    carried = learn.state.model_state["carry"]["h"].copy()
    params = copy_state(learn.state.variables())  # a copy: fit() donates learn.state's buffers
    # With a (practically) frozen model the loss of batch 1 depends on batch 0 through the carry alone.
    apply = lambda v, xb: learn.model.apply(v, xb, mutable=["carry"])  # noqa: E731
    out0, new = apply(params, jnp.asarray(x[:2]))
    out1, _ = apply({**params, **new}, jnp.asarray(x[2:4]))
    fresh1, _ = apply(params, jnp.asarray(x[2:4]))
    assert not np.allclose(out1, fresh1), "the carried state must change the next batch's output"
    learn.fit(1, valid=False)
    expected = {**params}
    for b in range(4):
        _, expected = apply(expected, jnp.asarray(x[2 * b:2 * b + 2]))
        expected = {**params, **expected}
    np.testing.assert_allclose(learn.state.model_state["carry"]["h"], expected["carry"]["h"], rtol=1e-5)
    learn.reset_carry()
    np.testing.assert_array_equal(learn.state.model_state["carry"]["h"], carried)

    # BPTT is cut at the batch boundary: batch 1's loss has no gradient w.r.t. batch 0's inputs.
    def loss_of_second_batch(x0):
        _, v = learn.model.apply(params, x0, mutable=["carry"])
        logits, _ = learn.model.apply({**params, **v}, jnp.asarray(x[2:4]), mutable=["carry"])
        return S.cross_entropy(logits, jnp.asarray(y[2:4])).sum()
    chex.assert_trees_all_close(jax.grad(loss_of_second_batch)(jnp.asarray(x[:2])), jnp.zeros((2, 3)))


def test_the_optimizer_settings_a_user_gives_are_kept(tiny_data):
    x, y = tiny_data
    dls = DataLoaders.from_arrays((x, y), (x, y), 16)
    model = get_model(nfs=(1, 4, 8))
    learn = Learner(model, dls, optimizer=partial(optax.adamw, learning_rate=3e-4, weight_decay=0.05))
    assert learn.get_hyper("learning_rate") == pytest.approx(3e-4)
    assert learn.get_hyper("weight_decay") == pytest.approx(0.05)
    assert Learner(model, dls, optimizer=partial(optax.adamw, learning_rate=3e-4), lr=0.01).get_hyper(
        "learning_rate") == pytest.approx(0.01), "an explicit lr replaces it"
    sched = optax.linear_schedule(0.1, 0.0, 12)
    learn = Learner(model, dls, optimizer=partial(optax.sgd, learning_rate=sched))
    learn.fit(1, valid=False)
    assert int(learn.state.step) == 6


class Perturbed(nn.Module):  # keeps a 'perturbations' collection (made at init on 2 examples)
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = self.perturb("h", nn.Dense(8)(x.reshape(x.shape[0], -1)))
        self.sow("intermediates", "h", h)
        return nn.Dense(3)(jnp.tanh(h))


def test_models_with_any_collection_train(tiny_data):
    x, y = tiny_data
    learn = Learner(Perturbed(), DataLoaders.from_arrays((x, y), (x, y), 32))
    assert set(learn.state.model_state) == set()
    history = MetricsCB(show=False)
    learn.fit(3, callbacks=[history])
    assert history.history[-1]["train_loss"] < history.history[0]["train_loss"]


def test_predict_and_evaluate_need_no_train_call_for_the_schedules_of_the_learner(tiny_data):
    """A Learner built with a schedule among its callbacks predicts and evaluates before any fit (a schedule
    is only made for a fit's length: one-cycle over 0 steps would be an error)."""
    x, y = tiny_data
    learn = Learner(get_model(nfs=(1, 4, 8)), DataLoaders.from_arrays((x, y), (x, y), 16),
                    callbacks=[ParamSchedulerCB("learning_rate", lambda n: schedules.one_cycle(0.1, n))])
    assert learn.predict(x[:3], raw=True).shape == (3, 10)
    assert set(learn.evaluate()) == {"loss", "accuracy"}
    learn.fit(1)
    assert int(learn.state.step) == learn.dls.train.n_batches
