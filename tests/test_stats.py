from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn import stats
from jaxlearn.callbacks import ActivationStats
from jaxlearn.data import DataLoaders
from jaxlearn.layers import GeneralRelu
from jaxlearn.learner import Learner
from jaxlearn.models import get_model


def numpy_summary(x):
    x = np.asarray(x, np.float64)
    hist = np.histogram(np.abs(x), bins=40, range=(0, 10))[0]
    return {"mean": x.mean(), "std": x.std(), "hist": hist,
            "signed_hist": np.histogram(x, bins=40, range=(-5, 5))[0],
            "dead": hist[0] / x.size, "saturated": (np.abs(x) > 0.97).mean()}


def test_summarize_equals_numpy():
    x = jax.random.normal(jax.random.key(1), (64, 7, 7, 16)) * 3 + 0.5
    got = jax.jit(stats.summarize)(x)
    want = numpy_summary(x)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_histogram_edges_follow_numpy():
    x = jnp.array([0.0, 0.25, 0.2499, 9.99, 10.0, 10.01, -0.1])
    np.testing.assert_array_equal(stats.histogram(x), np.histogram(np.asarray(x), bins=40, range=(0, 10))[0])


def test_activation_stats_in_step_equal_numpy_on_captured_activations(fashion_small):
    (x, y), test = fashion_small
    dls = DataLoaders.from_arrays((x[:256], y[:256]), test, 128)
    dls.train.shuffle = False
    act = partial(GeneralRelu, leak=0.1, sub=0.4)
    astats = ActivationStats(GeneralRelu, signed=True)
    learn = Learner(get_model(act), dls, optimizer=optax.sgd, lr=0.1, callbacks=[astats])
    learn.fit(1, valid=False)
    params1 = learn.state.params  # what the next fit's first batch sees
    learn.fit(1, valid=False)
    assert learn.n_traces == 1, "the stats-capturing step compiles once"
    s = astats.stats
    assert list(s) == [f"ConvBlock_{i}/GeneralRelu_0" for i in range(4)]
    chex.assert_shape(s["ConvBlock_0/GeneralRelu_0"]["hist"], (2, 40))  # 2 batches in the last fit
    xb = dls.train.transform(dls.train.x[:128])  # unshuffled: the first batch
    _, captured = learn.model.apply({"params": params1}, xb, capture_intermediates=astats.capture,
                                    mutable=["intermediates"])
    flat = stats.flatten_intermediates(captured["intermediates"])
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
