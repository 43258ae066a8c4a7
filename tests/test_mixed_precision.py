"""Mixed precision: bfloat16 compute with float32 params; float16 with dynamic loss scaling."""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlearn.optim.loss_scaling import LossScaleState, dynamic_loss_scale
from jaxlearn.trees import copy_state
from jaxlearn.callbacks import BatchTransformCB, MetricsCB
from jaxlearn.data import DataLoaders, normalize
from jaxlearn.learner import Learner

from _tiny import tiny_arrays


class MLP(nn.Module):
    """Dense → BatchNorm → relu → Dense: float32 running statistics to keep while computing in half precision."""
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Dense(32)(x.reshape(x.shape[0], -1))
        return nn.Dense(3)(nn.relu(nn.BatchNorm(momentum=0.9)(x, use_running_average=not train)))


def fitted(compute_dtype, epochs=4):
    x, y = tiny_arrays()
    learn = Learner(MLP(), DataLoaders.from_arrays((x, y), tiny_arrays(48, seed=1), 16), lr=0.05,
                    optimizer=partial(optax.sgd, momentum=0.9), compute_dtype=compute_dtype,
                    callbacks=[BatchTransformCB(normalize(110.0, 70.0))])
    metrics = MetricsCB(show=False)
    learn.fit(epochs, callbacks=[metrics])
    return learn, [row["train_loss"] for row in metrics.history]


def test_bfloat16_trains_with_float32_params_close_to_float32():
    learn16, losses16 = fitted(jnp.bfloat16)
    learn32, losses32 = fitted(None)
    assert losses16[-1] < losses16[0]
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(learn16.state.params))
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(learn16.state.model_state))
    x, _ = tiny_arrays(32, seed=5)
    p16, p32 = learn16.predict(x, raw=True), learn32.predict(x, raw=True)
    assert p16.dtype == np.float32
    assert (p16.argmax(-1) == p32.argmax(-1)).mean() >= 0.9  # the runs differ step by step, not in outcome
    learn16.state = copy_state(learn32.state)  # the same params through the bfloat16 forward pass
    p16 = learn16.predict(x, raw=True)
    np.testing.assert_allclose(p16, p32, atol=0.02 * np.abs(p32).max())  # bfloat16 keeps 8 mantissa bits
    assert not np.array_equal(p16, p32)


def test_float16_with_loss_scaling_trains_without_nan():
    learn, losses = fitted(jnp.float16)
    assert isinstance(learn.state.opt_state, LossScaleState)
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(np.isfinite(a).all() and a.dtype == jnp.float32 for a in jax.tree.leaves(learn.state.params))


def test_loss_scaling_skips_non_finite_steps_and_adapts_the_scale():
    tx = dynamic_loss_scale(optax.sgd(1.0), init_scale=8.0, growth_interval=2)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    updates, state = tx.update({"w": jnp.array([jnp.inf, 1.0])}, state, params)
    assert float(state.scale) == 4.0 and np.all(np.asarray(updates["w"]) == 0)  # skipped, scale halved
    for _ in range(2):
        updates, state = tx.update({"w": jnp.array([8.0, 4.0])}, state, params)
    assert float(state.scale) == 8.0  # two finite steps in a row: doubled
    np.testing.assert_allclose(updates["w"], [-2.0, -1.0])  # gradients unscaled by the scale they were taken at


def test_nan_guard_lets_loss_scaling_skip_an_overflow_but_not_a_floored_scale():
    from jaxlearn.callbacks import NaNGuardCB
    x, y = tiny_arrays()

    def learner():
        return Learner(MLP(), DataLoaders.from_arrays((x, y), tiny_arrays(48, seed=1), 16), lr=0.05,
                       optimizer=partial(optax.sgd, momentum=0.9), compute_dtype=jnp.float16, table=False,
                       callbacks=[BatchTransformCB(normalize(110.0, 70.0))])

    learn = learner()
    huge = learn.state.opt_state._replace(scale=jnp.asarray(2.0 ** 40, jnp.float32))  # float16 overflows at once
    learn.replace_state(opt_state=huge)
    guard = NaNGuardCB(verbose=False)
    learn.fit(1, callbacks=[guard])
    assert guard.bad is None and learn.fit_epochs_done == 1  # the overflowing steps were skipped, not fatal
    assert float(learn.state.opt_state.scale) < 2.0 ** 40
    assert all(np.isfinite(a).all() for a in jax.tree.leaves(learn.state.params))

    learn = learner()  # a NaN that no scale fixes: the guard still stops
    learn.replace_state(params=jax.tree.map(lambda a: a * np.nan, learn.state.params))
    guard = NaNGuardCB(verbose=False)
    learn.fit(1, callbacks=[guard])
    assert guard.bad is not None and guard.bad["step"] == 0
