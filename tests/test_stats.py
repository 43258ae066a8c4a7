from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn.callbacks import stats
from jaxlearn.trees import flatten_intermediates
from jaxlearn.callbacks import ActivationStats
from jaxlearn.data import DataLoaders
from jaxlearn.learner import Learner
from jaxlearn.nn import GeneralRelu
from jaxlearn.trees import copy_state
from jaxlearn.vision import get_model


def numpy_summary(x):
    x = np.asarray(x, np.float64)
    hist = np.histogram(np.abs(x), bins=40, range=(0, 10))[0]
    return {"mean": x.mean(), "std": x.std(), "hist": hist,
            "signed_hist": np.histogram(x, bins=40, range=(-5, 5))[0],
            "dead": hist[0] / x.size, "saturated": (np.abs(x) > 0.97).mean()}


@pytest.mark.parametrize("scale, shift", [(3.0, 0.5), (0.01, 1000.0), (1.0, -0.4)])
def test_summarize_equals_numpy(scale, shift):
    # (0.01, 1000): a mean 1e5 stds away must not cancel the one-pass variance.
    x = jax.random.normal(jax.random.key(1), (64, 7, 7, 16)) * scale + shift
    got = jax.jit(stats.summarize)(x)
    want = numpy_summary(x)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4 if k == "std" else 1e-5, atol=1e-6, err_msg=k)


def test_histogram_edges_follow_numpy():
    x = jnp.array([0.0, 0.25, 0.2499, 9.99, 10.0, 10.01, -0.1])
    np.testing.assert_array_equal(stats.histogram(x), np.histogram(np.asarray(x), bins=40, range=(0, 10))[0])


@pytest.mark.parametrize("value_range", [(0.0, 10.0), (-5.0, 5.0)])
@pytest.mark.parametrize("traced_range", [False, True])
def test_histogram_at_and_beside_every_edge_follows_numpy(value_range, traced_range):
    # Values on each edge and one float32 ulp either side must land in numpy's bins exactly, on the fast
    # power-of-two path (static range) and on the edge-checked path (traced range) alike.
    lo, hi = value_range
    edges = np.linspace(lo, hi, 41).astype(np.float32)
    x = np.concatenate([edges, np.nextafter(edges, np.float32(-np.inf)), np.nextafter(edges, np.float32(np.inf)),
                        np.random.default_rng(0).uniform(lo - 1, hi + 1, 1000).astype(np.float32)])
    x = x[(x == 0) | (np.abs(x) >= np.finfo(np.float32).tiny)]  # XLA:CPU flushes subnormals to zero
    want = np.histogram(x.astype(np.float64), bins=40, range=value_range)[0]
    if traced_range:
        got = jax.jit(lambda x, r: stats.histogram(x, 40, (r[0], r[1])))(x, jnp.asarray(value_range))
    else:
        got = jax.jit(lambda x: stats.histogram(x, 40, value_range))(x)
    np.testing.assert_array_equal(got, want)


def test_histogram_any_range_away_from_edges_follows_numpy():
    # A non-power-of-two bin width has float32-rounded edges, so only values off the edges are compared.
    x = np.random.default_rng(1).uniform(-2.0, 3.5, 5000).astype(np.float32)
    edges = np.linspace(-1.3, 2.9, 31)
    x = x[np.abs(x[:, None] - edges).min(1) > 1e-5]
    np.testing.assert_array_equal(stats.histogram(jnp.asarray(x), 30, (-1.3, 2.9)),
                                  np.histogram(x.astype(np.float64), bins=30, range=(-1.3, 2.9))[0])


def test_activation_stats_in_step_equal_numpy_on_captured_activations(fashion_small):
    (x, y), test = fashion_small
    dls = DataLoaders.from_arrays((x[:256], y[:256]), test, 128)
    dls.train.shuffle = False
    act = partial(GeneralRelu, leak=0.1, sub=0.4)
    astats = ActivationStats(GeneralRelu, signed=True)
    learn = Learner(get_model(act), dls, optimizer=optax.sgd, lr=0.1, callbacks=[astats])
    learn.fit(1, valid=False)
    params1 = copy_state(learn.state.params)  # what the next fit's first batch sees (a copy: fit donates)
    learn.fit(1, valid=False)
    assert learn.n_traces == 1, "the stats-capturing step compiles once"
    s = astats.stats
    assert list(s) == [f"ConvBlock_{i}/GeneralRelu_0" for i in range(4)]
    chex.assert_shape(s["ConvBlock_0/GeneralRelu_0"]["hist"], (2, 40))  # 2 batches in the last fit
    xb = dls.train.transform(dls.train.x[:128])  # unshuffled: the first batch
    _, captured = learn.model.apply({"params": params1}, xb, capture_intermediates=astats.capture,
                                    mutable=["intermediates"])
    flat = flatten_intermediates(captured["intermediates"])
    for name, acts in flat.items():
        want = numpy_summary(acts)
        for k, v in want.items():
            np.testing.assert_allclose(s[name][k][0], v, rtol=1e-4, atol=1e-5, err_msg=f"{name} {k}")


def test_update_ratio_formula():
    p = {"w": jnp.arange(6.0)}
    u = {"w": jnp.arange(6.0) * 1e-3}
    np.testing.assert_allclose(stats.update_ratio(u, p)["w"], -3.0, atol=1e-5)


def test_activation_stats_needs_a_filter():
    with pytest.raises(ValueError, match="module types"):
        ActivationStats()
