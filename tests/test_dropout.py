import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn.callback import Callback
from jaxlearn.data import DataLoaders
from jaxlearn.learner import Learner
from jaxlearn.nn import Dropout
from jaxlearn.vision import dropout_ps


def drop(x, p, key=0, **kw):
    return Dropout(p, **kw).apply({}, x, True, rngs={"dropout": jax.random.key(key)})


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.8])
def test_inverted_scaling_keeps_the_mean_and_drops_p(p):
    x = jnp.full((400, 500), 2.0)
    out = np.asarray(drop(x, p))
    dropped = out == 0
    assert abs(dropped.mean() - p) < 0.01                          # fraction dropped ≈ p (200k draws)
    np.testing.assert_allclose(out[~dropped], 2.0 / (1 - p), rtol=1e-6)  # survivors scaled by 1/(1-p)
    assert abs(out.mean() - 2.0) < 0.03 * 2.0 / np.sqrt(1 - p)         # mean preserved


def test_eval_is_identity():
    x = jax.random.normal(jax.random.key(1), (8, 5, 5, 3))
    for out in (Dropout(0.5).apply({}, x, False),
                Dropout(0.5).apply({}, x, deterministic=True),
                Dropout(0.5, deterministic=True).apply({}, x)):
        np.testing.assert_array_equal(out, x)


def test_edge_cases_and_errors():
    x = jnp.ones((4, 6))
    np.testing.assert_array_equal(drop(x, 0.0), x)
    np.testing.assert_array_equal(drop(x, 1.0), jnp.zeros_like(x))
    with pytest.raises(ValueError, match="train"):
        Dropout(0.5).apply({}, x)
    with pytest.raises(ValueError, match="p must be"):
        drop(x, 1.5)
    with pytest.raises(ValueError, match="contradicts"):
        Dropout(0.5).apply({}, x, True, deterministic=True)


def test_different_keys_different_masks_and_broadcast_dims():
    x = jnp.ones((2, 6, 6, 16))
    assert not np.array_equal(drop(x, 0.5, key=0), drop(x, 0.5, key=1))
    np.testing.assert_array_equal(drop(x, 0.5, key=3), drop(x, 0.5, key=3))
    out = np.asarray(drop(x, 0.5, broadcast_dims=(1, 2)))  # whole channels dropped (spatial dropout)
    assert (out == out[:, :1, :1, :]).all()


def test_dropout_ps_rule():
    assert dropout_ps(0.5, 3) == (0.25, 0.25, 0.5)  # fastai: p before the last layer, p/2 before the others
    assert dropout_ps([0.25, 0.5], 2) == (0.25, 0.5)
    with pytest.raises(ValueError):
        dropout_ps([0.1], 2)


class DropNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = x.reshape(x.shape[0], -1)
        x = Dropout(0.5)(x, train)
        return nn.Dense(3, kernel_init=nn.initializers.ones, bias_init=nn.initializers.zeros)(x)


class KeepX(Callback):
    """The model's train-mode output for a fixed input, computed in the step with the step's dropout key."""
    def in_step(self, ctx):
        return ctx.preds[0]

    def before_fit(self, learn):
        self.outs = []

    def after_batch(self, learn):
        if learn.training:
            self.outs.append(np.asarray(learn.step_outputs[self]))


def test_learner_feeds_a_fresh_dropout_key_each_step(tiny_data):
    x, y = tiny_data
    x = np.ones_like(x)
    dls = DataLoaders.from_arrays((x, y), (x, y), 16)
    keep = KeepX()
    learn = Learner(DropNet(), dls, optimizer=optax.sgd, lr=1e-9, callbacks=[keep])
    learn.fit(1, valid=False)
    outs = np.concatenate(keep.outs)
    assert len({tuple(np.round(o, 4)) for o in outs}) > 1  # masks differ from step to step
    xin = jnp.asarray(x[:2], jnp.float32) / 255
    preds = learn.state.apply_fn(learn.state.variables(), xin, train=False)  # eval: no dropout
    np.testing.assert_allclose(preds[0], np.asarray(xin[0]).sum() * np.ones(3), rtol=1e-4)
