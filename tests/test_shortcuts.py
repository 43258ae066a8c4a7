"""fastai's shortcuts on the Learner: fit_one_cycle, lr_find, summary, show_results — thin wrappers."""

import re
from functools import partial

import jax
import numpy as np
import optax
import pytest

from jaxlearn import optim
from jaxlearn.callbacks import ParamSchedulerCB, valley
from jaxlearn.optim import one_cycle, one_cycle_momentum

from _shortcut_learner import tiny_cnn_learner


def assert_trees_equal(a, b):
    la, ta = jax.tree.flatten(jax.device_get(a))
    lb, tb = jax.tree.flatten(jax.device_get(b))
    assert ta == tb
    for u, v in zip(la, lb):
        assert np.asarray(u).dtype == np.asarray(v).dtype and np.array_equal(u, v)


@pytest.mark.parametrize("optimizer, momentum", [(partial(optax.sgd, momentum=0.9), "momentum"),
                                                 (optim.adam, "b1"), (optim.momentum, "beta")])
def test_fit_one_cycle_is_the_explicit_fit_with_two_schedulers(optimizer, momentum):
    shortcut, explicit = tiny_cnn_learner(optimizer), tiny_cnn_learner(optimizer)
    shortcut.fit_one_cycle(2, 0.05, pct_start=0.3)
    explicit.fit(2, callbacks=[
        ParamSchedulerCB("learning_rate", lambda n: one_cycle(0.05, n, pct_start=0.3)),
        ParamSchedulerCB(momentum, lambda n: one_cycle_momentum(n, pct_start=0.3, moms=(0.95, 0.85, 0.95)))])
    assert_trees_equal(shortcut.state.params, explicit.state.params)
    assert_trees_equal(shortcut.state.opt_state, explicit.state.opt_state)


def test_fit_one_cycle_without_momentum_schedules_the_lr_and_reuses_its_compilation():
    learn = tiny_cnn_learner(optax.sgd)  # no momentum hyperparameter: only the lr is scheduled
    learn.fit_one_cycle(1, 0.05)
    traces = learn.n_traces
    last = learn.dls.train.n_batches - 1  # the lr the last step used
    assert learn.get_hyper("learning_rate") == pytest.approx(float(one_cycle(0.05, last + 1)(last)), rel=1e-6)
    learn.fit_one_cycle(1, 0.05)  # equal settings: the same compiled call
    assert learn.n_traces == traces


def test_lr_find_restores_the_learner_and_suggests_lrs_in_range(tmp_path):
    learn = tiny_cnn_learner()
    learn.fit(1)
    before = jax.device_get((learn.state.params, learn.state.model_state, learn.state.opt_state,
                             learn.state.step, jax.random.key_data(learn.state.rng)))
    found = learn.lr_find(start_lr=1e-5, end_lr=10, num_it=40, plot=tmp_path / "lr_find.png")
    assert_trees_equal((learn.state.params, learn.state.model_state, learn.state.opt_state, learn.state.step,
                        jax.random.key_data(learn.state.rng)), before)
    assert learn.epochs_done == 1 and learn.get_hyper("learning_rate") == pytest.approx(0.1)
    assert found._fields == ("valley", "minimum")
    assert 1e-5 <= found.valley <= 10 and 1e-6 <= found.minimum <= 1  # minimum is a tenth of a tried lr
    assert (tmp_path / "lr_find.png").stat().st_size > 0


def test_valley_is_two_thirds_along_the_longest_descent():
    lrs = np.logspace(-5, 0, 20)
    losses = np.r_[np.full(2, 2.0), np.linspace(1.9, 0.4, 12), np.linspace(0.5, 3.0, 6)]  # falls over 1..13
    # longest decreasing run: index 1 (start) .. 13 (end, lds 13) -> start = 0; 0 + int(13/3) + int(13/6) = 6
    assert valley(lrs, losses) == pytest.approx(lrs[6])


def test_summary_reports_every_trainable_parameter(capsys):
    learn = tiny_cnn_learner()
    text = learn.summary()
    assert text in capsys.readouterr().out
    n_params = sum(a.size for a in jax.tree.leaves(learn.state.params))
    assert int(re.search(r"Trainable parameters: ([\d,]+)", text)[1].replace(",", "")) == n_params
    assert "ConvBlock_0" in text and "\x1b[" not in text  # per-layer rows, no terminal colour codes


def test_show_results_titles_predictions_with_class_names(tmp_path):
    learn = tiny_cnn_learner()
    fig = learn.show_results(n=6, path=tmp_path / "results.png")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 6 and all(t.split(" / ")[1] in ("low", "mid", "high") for t in titles)
    assert (tmp_path / "results.png").stat().st_size > 0


def test_fine_tune_trains_the_head_alone_then_all_groups_with_differential_lrs():
    from jaxlearn.callbacks import RecorderCB
    from jaxlearn.optim.groups import trainable_flags
    learn = tiny_cnn_learner(optim.layer_groups(optim.adam, (1e-3,) * 3))
    before = jax.device_get(learn.state.params)
    rec = RecorderCB("learning_rate", "lr_mult")
    learn.fine_tune(1, base_lr=2e-2, freeze_epochs=1, lr_mult=100, callbacks=[rec])
    mults = [float(v) for k, v in sorted(
        {jax.tree_util.keystr(p): l for p, l in jax.tree_util.tree_flatten_with_path(
            jax.device_get(learn.state.opt_state))[0] if "lr_mult" in jax.tree_util.keystr(p)}.items())]
    np.testing.assert_allclose(mults, [0.01, 0.1, 1.0], rtol=1e-6)  # fastai's slice(base_lr / 100, base_lr)
    assert all(float(v) == 1.0 for v in trainable_flags(learn.state.opt_state).values())  # unfrozen at the end
    assert float(rec.recs["learning_rate"].max()) == pytest.approx(1e-2, rel=0.02)  # base_lr / 2 in phase two
    after = jax.device_get(learn.state.params)
    assert all(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))


def test_fine_tune_without_layer_groups_says_how_to_make_them():
    with pytest.raises(ValueError, match=r"layer groups: Learner\(model, dls, optimizer=jaxlearn.optim.layer_groups"):
        tiny_cnn_learner(optax.adam).fine_tune(1)


def test_fine_tune_freezes_the_body_in_its_first_phase():
    from jaxlearn.callback import Callback

    class AfterEachFit(Callback):
        def __init__(self):
            self.params = []

        def after_fit(self, learn):
            self.params.append(jax.device_get(learn.state.params))

    learn = tiny_cnn_learner(optim.layer_groups(optim.adam, (1e-3,) * 3))
    before, seen = jax.device_get(learn.state.params), AfterEachFit()
    learn.fine_tune(1, base_lr=2e-2, callbacks=[seen])
    frozen = seen.params[0]
    layers = list(before)
    head = layers[-1]
    # the first two groups (all layers but the last few) stay bitwise; the head moved
    groups = np.array_split(np.arange(len(layers)), 3)
    for i in groups[0].tolist() + groups[1].tolist():
        assert_trees_equal(before[layers[i]], frozen[layers[i]])
    assert not np.array_equal(jax.tree.leaves(before[head])[0], jax.tree.leaves(frozen[head])[0])
