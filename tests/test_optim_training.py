"""Training-level checks of jaxlearn.optim / jaxlearn.optim.schedules through the Learner (tiny and fast).

* SGDR snapshots are taken exactly at the cycle ends (step counts), hold host copies of the params and
  model state, round-trip through files, and ensemble;
* freezing layer groups through the Learner keeps the frozen params bitwise unchanged and never
  retraces the compiled step;
* every optimizer alias, wrapped by the Learner's ``inject_hyperparams``, lowers the loss;
* the one-cycle lr and momentum schedules reach the optimizer state.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import optim
from jaxlearn.callback import Callback
from jaxlearn.callbacks import (LayerGroupsCB, ParamSchedulerCB, RecorderCB, SGDRSnapshotCB, load_snapshot,
                                snapshot_ensemble_accuracy, snapshot_ensemble_predict)
from jaxlearn.data import DataLoaders
from jaxlearn.learner import Learner
from jaxlearn.optim import one_cycle, one_cycle_momentum, sgdr, sgdr_cycle_ends


class MLP3(nn.Module):
    """Three Dense layers: three layer groups (Dense_0, Dense_1, Dense_2 = the head)."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(8)(x))
        x = nn.relu(nn.Dense(8)(x))
        return nn.Dense(3)(x)


def make_learner(tiny_data, optimizer, lr=0.1, bs=16, **kw):
    x, y = tiny_data
    dls = DataLoaders.from_arrays((x, y), (x, y), bs)  # 96 examples: 6 batches per epoch
    return Learner(MLP3(), dls, optimizer=optimizer, lr=lr, **kw)


def host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


def bits(tree):
    return jax.tree.map(lambda a: np.asarray(a).view(np.uint32), host(tree))


def assert_bitwise_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, bits(a), bits(b))


class ParamsAfterEachCall(Callback):
    """Host copies of the params after every training call, keyed by steps into the fit."""

    def before_fit(self, learn):
        self.step, self.params = 0, {}

    def after_batch(self, learn):
        if learn.training:
            self.step += learn.n_steps
            self.params[self.step] = host(learn.state.params)


# ----------------------------------------------------------------------------------------- SGDR snapshots

@pytest.mark.parametrize("steps_per_call", [1, 4])
def test_sgdr_snapshots_at_cycle_ends(tiny_data, tmp_path, steps_per_call):
    learn = make_learner(tiny_data, optim.momentum, lr=0.5, steps_per_call=steps_per_call)
    spe = learn.dls.train.n_batches
    assert spe == 6
    snap = SGDRSnapshotCB(cycle_len=1, cycle_mult=2, save_dir=tmp_path, name="mlp")
    rec, seen = RecorderCB("learning_rate"), ParamsAfterEachCall()
    learn.fit(7, valid=False,
              callbacks=[ParamSchedulerCB("learning_rate", lambda n: sgdr(0.5, spe, 1, 2)), snap, rec, seen])

    ends = sgdr_cycle_ends(spe, 1, 2, 3)
    assert ends == [6, 18, 42]
    assert [s["step"] for s in snap.snapshots] == ends  # cycles of 1, 2 and 4 epochs
    assert [s["cycle"] for s in snap.snapshots] == [0, 1, 2]
    for s in snap.snapshots:
        # The snapshot is the model right after the cycle's last step ...
        assert_bitwise_equal(s["params"], seen.params[s["step"]])
        # ... stored on the host, so later device updates cannot alias it.
        assert all(isinstance(a, np.ndarray) for a in jax.tree.leaves(s["params"]))
    assert_bitwise_equal(snap.snapshots[-1]["params"], learn.state.params)
    if steps_per_call == 1:
        lrs = np.asarray(rec.recs["learning_rate"])
        # The lr has annealed to ~0 on each cycle's last step and restarts at base_lr right after it.
        np.testing.assert_allclose(lrs, jax.vmap(sgdr(0.5, spe, 1, 2))(jnp.arange(42)), rtol=1e-6)
        assert np.all(lrs[[e - 1 for e in ends]] < 0.04)
        np.testing.assert_allclose(lrs[[0, *ends[:-1]]], 0.5)
    # Written to disk as fast.ai 2018's cycle_save_name did; read back identical.
    for s in snap.snapshots:
        loaded = load_snapshot(tmp_path / f"mlp_{s['cycle']}.msgpack")
        assert loaded["step"] == s["step"]
        assert_bitwise_equal(loaded["params"], s["params"])


def test_snapshots_reset_each_fit_and_cover_only_the_fit(tiny_data):
    learn = make_learner(tiny_data, optim.momentum, lr=0.5)
    spe = learn.dls.train.n_batches
    snap = SGDRSnapshotCB(cycle_len=1, cycle_mult=2)
    learn.fit(4, valid=False, callbacks=[ParamSchedulerCB("learning_rate", lambda n: sgdr(0.5, spe, 1, 2)), snap])
    assert [s["step"] for s in snap.snapshots] == [6, 18]  # the third cycle (ending at 42) is not reached
    learn.fit(1, valid=False, callbacks=[snap])
    assert [s["step"] for s in snap.snapshots] == [6]


def test_snapshot_ensemble(tiny_data):
    learn = make_learner(tiny_data, optim.momentum, lr=0.5)
    spe = learn.dls.train.n_batches
    snap = SGDRSnapshotCB(cycle_len=1, cycle_mult=1)
    learn.fit(3, valid=False, callbacks=[ParamSchedulerCB("learning_rate", lambda n: sgdr(0.5, spe, 1, 1)), snap])
    assert [s["step"] for s in snap.snapshots] == [6, 12, 18]
    state, x = learn.state, learn.dls.valid.x
    probs = [snapshot_ensemble_predict(learn, [s], x) for s in snap.snapshots]
    np.testing.assert_allclose(probs[-1], jax.nn.softmax(learn.predict(x, raw=True)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(snapshot_ensemble_predict(learn, snap.snapshots, x), np.mean(probs, 0),
                               rtol=1e-5, atol=1e-6)
    assert learn.state is state  # put back
    acc = snapshot_ensemble_accuracy(learn, snap.snapshots)
    y = np.asarray(learn.dls.valid.y)
    assert acc["members"] == [float((p.argmax(-1) == y).mean()) for p in probs]
    assert acc["ensemble"] == float((np.mean(probs, 0).argmax(-1) == y).mean()) == acc["last_k"][-1]
    with pytest.raises(ValueError):
        snapshot_ensemble_predict(learn, [], x)


# ------------------------------------------------------------------------------------ freezing + groups

def in_group(tree, group):
    return {k: v for k, v in host(tree).items() if int(k.split("_")[1]) == group}  # Dense_i is group i


def test_freezing_through_the_learner_is_exact_and_does_not_retrace(tiny_data):
    # Adam with decoupled weight decay: a frozen group must not even decay.
    tx = optim.layer_groups(optim.adam, optim.lr_range(1e-2, 3), weight_decay=0.1)
    learn = make_learner(tiny_data, tx)
    learn.fit(1)
    traces = learn.n_traces
    assert traces == 2  # one train call and one eval call traced

    # The documented idiom: a pure function of the optimizer state.
    p0 = host(learn.state.params)
    learn.state = learn.state.replace(opt_state=optim.freeze_to(learn.state.opt_state, 2))
    learn.fit(2, callbacks=[ParamSchedulerCB("learning_rate", lambda n: one_cycle(1e-2, n))])
    p1 = host(learn.state.params)
    for g in (0, 1):
        assert_bitwise_equal(in_group(p1, g), in_group(p0, g))
    assert not np.allclose(p1["Dense_2"]["kernel"], p0["Dense_2"]["kernel"])

    # The callback: train groups >= 1 for this fit.
    learn.fit(1, callbacks=[LayerGroupsCB(freeze_to=1)])
    p2 = host(learn.state.params)
    assert_bitwise_equal(in_group(p2, 0), in_group(p1, 0))
    assert not np.allclose(p2["Dense_1"]["kernel"], p1["Dense_1"]["kernel"])

    # The helper: unfreeze everything.
    learn.replace_state(opt_state=optim.freeze_to(learn.state.opt_state, 0))
    learn.fit(1)
    assert not np.allclose(host(learn.state.params)["Dense_0"]["kernel"], p2["Dense_0"]["kernel"])
    # freezing and unfreezing only changed state values; the schedule runs inside its own train call
    assert learn.n_traces == traces + 1


def test_layer_groups_cb_restore_and_shared_lr(tiny_data):
    learn = make_learner(tiny_data, optim.layer_groups(optim.sgd, (0.01, 0.1)))
    flags = lambda: [float(learn.state.opt_state.inner_states[g].inner_state.hyperparams["trainable"])  # noqa: E731
                     for g in range(2)]
    p0 = host(learn.state.params)
    learn.fit(1, valid=False, callbacks=[LayerGroupsCB(freeze_to=-1, restore=True)])
    assert_bitwise_equal(in_group(learn.state.params, 0), in_group(p0, 0))
    assert flags() == [1.0, 1.0]  # restored after the fit
    learn.fit(1, valid=False, callbacks=[LayerGroupsCB(freeze_to=-1)])
    assert flags() == [0.0, 1.0]  # kept, as fastai's freeze()
    # fit(lr=...) sets the shared lr; the groups keep their 1:10 ratio.
    learn.set_hyper("learning_rate", 0.5)
    hp = [learn.state.opt_state.inner_states[g].inner_state.hyperparams for g in range(2)]
    assert [float(h["learning_rate"]) for h in hp] == [0.5, 0.5]
    np.testing.assert_allclose([float(h["lr_mult"]) for h in hp], [0.1, 1.0])


# ------------------------------------------------------------------------------ every alias trains

@pytest.mark.parametrize("factory, lr", [(optim.sgd, 0.3), (optim.momentum, 1.0), (optim.rmsprop, 3e-2),
                                         (optim.adam, 5e-2), (optim.adamw, 5e-2)],
                         ids=["sgd", "momentum", "rmsprop", "adam", "adamw"])
def test_each_alias_lowers_the_loss_through_the_learner(tiny_data, factory, lr):
    learn = make_learner(tiny_data, factory, lr=lr)
    before = learn.evaluate()["loss"]
    learn.fit(4, valid=False)
    after = learn.evaluate()
    assert after["loss"] < 0.5 * before, (before, after)
    assert after["accuracy"] > 0.8
    assert learn.n_traces == 2


def test_one_cycle_lr_and_momentum_reach_the_optimizer(tiny_data):
    learn = make_learner(tiny_data, optim.adamw, lr=1e-2)
    rec = RecorderCB("learning_rate", "b1")
    learn.fit(2, valid=False, callbacks=[ParamSchedulerCB("learning_rate", lambda n: one_cycle(1e-2, n)),
                                         ParamSchedulerCB("b1", lambda n: one_cycle_momentum(n)), rec])
    n = 2 * learn.dls.train.n_batches
    steps = jnp.arange(n)
    np.testing.assert_allclose(rec.recs["learning_rate"], jax.vmap(one_cycle(1e-2, n))(steps), rtol=1e-5)
    np.testing.assert_allclose(rec.recs["b1"], jax.vmap(one_cycle_momentum(n))(steps), rtol=1e-5)
    assert learn.n_traces == 1  # only the train call



def test_snapshots_of_a_resumed_fit_count_from_its_first_epoch():
    # A fit resumed from a checkpoint at epoch 2 (learn.epochs = range(2, 7)): cycle 0 (step 6) is past.
    from types import SimpleNamespace
    params = {"w": jnp.ones(2)}
    learn = SimpleNamespace(dls=SimpleNamespace(train=SimpleNamespace(n_batches=6)), n_epochs=7,
                            epochs=range(2, 7), training=True, n_steps=6,
                            state=SimpleNamespace(params=params, model_state={}))
    snap = SGDRSnapshotCB(cycle_len=1, cycle_mult=2)
    snap.before_fit(learn)
    for _ in range(5):
        snap.after_batch(learn)
    assert [(s["cycle"], s["step"]) for s in snap.snapshots] == [(1, 18), (2, 42)]
