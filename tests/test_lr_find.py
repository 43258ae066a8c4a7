"""The LR finder (fast.ai's range test): it puts the Learner back exactly and its curve has the textbook shape."""

from functools import partial

import jax
import numpy as np
import optax
import pytest

from jaxlearn.callback import Callback
from jaxlearn.callbacks import BatchTransformCB, LRFinderCB, lr_find
from jaxlearn.data import DataLoaders, normalize
from jaxlearn.learner import Learner
from jaxlearn.nn import BatchNorm, GeneralRelu, kaiming_normal
from jaxlearn.vision import get_model

START_LR, GAMMA = 1e-4, 1.3


class RawLosses(Callback):
    """Every training batch's (unsmoothed) loss; runs before the finder, which may cancel the fit."""
    order = -1

    def __init__(self):
        self.losses = []

    def after_batch(self, learn):
        if learn.training:
            self.losses += np.asarray(learn.losses).tolist()


def bn_learner(fashion_small, steps_per_call=1, callbacks=()):
    (x, y), test = fashion_small
    dls = DataLoaders.from_arrays((x, y), test, 64, seed=0)
    model = get_model(partial(GeneralRelu, leak=0.1, sub=0.4), norm=BatchNorm, kernel_init=kaiming_normal(a=0.1))
    return Learner(model, dls, optimizer=partial(optax.sgd, momentum=0.85), lr=0.05, seed=0,
                   steps_per_call=steps_per_call,
                   callbacks=[BatchTransformCB(normalize(0.28, 0.35)), *callbacks])


def assert_trees_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for u, v in zip(la, lb):
        u, v = np.asarray(u), np.asarray(v)
        assert u.dtype == v.dtype and u.shape == v.shape
        assert np.array_equal(u, v), "lr_find changed the Learner's state"


@pytest.fixture(scope="module")
def found(fashion_small, tmp_path_factory):
    """A BatchNorm CNN trained one epoch (so momentum, running stats and epochs_done are not initial), then the
    finder run on it with 4 batches per compiled call (the finder must still step one batch at a time)."""
    raw = RawLosses()
    learn = bn_learner(fashion_small, steps_per_call=4)
    learn.fit(1)
    before = jax.device_get((learn.state.params, learn.state.model_state, learn.state.opt_state,
                             learn.state.step, learn.state.rng))
    epochs, lr = learn.epochs_done, learn.get_hyper("learning_rate")
    path = tmp_path_factory.mktemp("lr_find") / "lr_find.png"
    finder = lr_find(learn, start_lr=START_LR, gamma=GAMMA, max_mult=3.0, plot_path=path, callbacks=[raw])
    return dict(learn=learn, finder=finder, before=before, epochs=epochs, lr=lr, raw=list(raw.losses), path=path)


def test_lr_find_restores_the_learner_bitwise(found):
    learn = found["learn"]
    params, model_state, opt_state, step, rng = found["before"]
    assert "batch_stats" in model_state
    assert_trees_equal(learn.state.params, params)
    assert_trees_equal(learn.state.model_state, model_state)   # BatchNorm running stats
    assert_trees_equal(learn.state.opt_state, opt_state)       # momentum buffers and the injected lr
    assert_trees_equal(learn.state.step, step)
    assert_trees_equal(jax.random.key_data(learn.state.rng), jax.random.key_data(rng))
    assert learn.get_hyper("learning_rate") == found["lr"] == pytest.approx(0.05)
    assert learn.epochs_done == found["epochs"] == 1
    assert learn.steps_per_call == 4
    assert not any(isinstance(cb, LRFinderCB) for cb in learn.callbacks)


def test_lr_find_leaves_training_reproducible(found, fashion_small):
    """After the finder, one more epoch gives exactly what it gives on a Learner that never ran it."""
    learn = found["learn"]
    twin = bn_learner(fashion_small, steps_per_call=4)
    twin.fit(1)
    learn.fit(1, valid=False)
    twin.fit(1, valid=False)
    assert_trees_equal(learn.state.params, twin.state.params)


def test_lr_grows_by_gamma_every_batch(found):
    finder = found["finder"]
    lrs = np.asarray(finder.lrs)
    assert len(lrs) == len(finder.losses) == len(found["raw"]) > 20
    np.testing.assert_allclose(lrs, START_LR * GAMMA ** np.arange(len(lrs)), rtol=1e-12)


def test_smoothed_loss_is_the_debiased_ewma_of_the_batch_losses(found):
    raw, smoothed = np.asarray(found["raw"]), np.asarray(found["finder"].losses)
    avg, want = 0.0, []
    for i, loss in enumerate(raw):
        avg = 0.98 * avg + 0.02 * loss
        want.append(avg / (1 - 0.98 ** (i + 1)))
    np.testing.assert_allclose(smoothed, want, rtol=1e-9)
    assert smoothed[0] == pytest.approx(raw[0])  # debiased: the first value is the first loss itself


def test_curve_has_an_inner_minimum_and_explodes(found):
    finder = found["finder"]
    losses = np.asarray(finder.losses)
    i_min = int(np.nanargmin(losses))
    assert 0 < i_min < len(losses) - 1, "the minimum must be strictly inside the curve"
    assert losses[i_min] < losses[0]
    # the finder stops as soon as the smoothed loss passes 3x its minimum (inf counts; NaN would not)
    assert losses[-1] > 3 * losses[i_min]
    assert np.all(losses[:-1] <= 3 * losses[i_min])
    assert finder.suggestion < finder.lrs[i_min]
    assert finder.suggestion == pytest.approx(finder.lrs[i_min] / 10)
    assert found["path"].stat().st_size > 0


def test_finder_validates_its_arguments():
    with pytest.raises(ValueError):
        LRFinderCB(start_lr=0.0)
    with pytest.raises(ValueError):
        LRFinderCB(gamma=1.0)
