"""Initialisers match their variance formulas; LSUV gives unit-variance activations."""

import math
import warnings

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.nn import init
from jaxlearn.nn import BatchNorm, GeneralRelu

DENSE = (256, 256)
CONV = (3, 3, 64, 128)  # fan_in 576, fan_out 1152


def sample_var(initializer, shape, seed=0):
    w = initializer(jax.random.key(seed), shape)
    chex.assert_shape(w, shape)
    return float(jnp.var(w)), float(jnp.mean(w))


def assert_var(initializer, shape, expected):
    var, mean = sample_var(initializer, shape)
    assert abs(var / expected - 1) < 0.05, (var, expected)
    assert abs(mean) < 0.05 * math.sqrt(expected)


def test_compute_fans():
    assert init.compute_fans(DENSE) == (256, 256)
    assert init.compute_fans((100, 30)) == (100, 30)
    assert init.compute_fans(CONV) == (576, 1152)
    with pytest.raises(ValueError):
        init.compute_fans((10,))


@pytest.mark.parametrize("shape", [DENSE, CONV])
def test_glorot(shape):
    fan_in, fan_out = init.compute_fans(shape)
    assert_var(init.glorot_normal(), shape, 2 / (fan_in + fan_out))
    assert_var(init.glorot_uniform(), shape, 2 / (fan_in + fan_out))
    assert_var(init.glorot_normal(gain=2.0), shape, 4 * 2 / (fan_in + fan_out))
    w = init.glorot_uniform()(jax.random.key(1), shape)
    bound = math.sqrt(6 / (fan_in + fan_out))
    assert float(jnp.abs(w).max()) <= bound
    assert float(jnp.abs(w).max()) > 0.99 * bound


@pytest.mark.parametrize("shape", [DENSE, CONV])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("a", [0.0, 0.1, math.sqrt(5)])
def test_kaiming(shape, mode, a):
    fan = dict(zip(["fan_in", "fan_out"], init.compute_fans(shape)))[mode]
    expected = 2 / (1 + a**2) / fan
    assert_var(init.kaiming_normal(a=a, mode=mode), shape, expected)
    assert_var(init.kaiming_uniform(a=a, mode=mode), shape, expected)


def test_kaiming_gain_override_and_bad_mode():
    assert_var(init.kaiming_normal(gain=5 / 3), DENSE, (5 / 3) ** 2 / 256)
    with pytest.raises(ValueError):
        init.kaiming_normal(mode="fan_avg")


def test_kaiming_normal_is_untruncated():
    # flax's he_normal truncates at 2 sigma; torch's kaiming_normal_ does not:
    # ~4.55% of a normal sample lies beyond 2 sigma.
    w = init.kaiming_normal()(jax.random.key(0), DENSE)
    frac = float(jnp.mean(jnp.abs(w) > 2 * math.sqrt(2 / 256)))
    assert 0.035 < frac < 0.056


def test_lecun_and_makemore_gain():
    assert_var(init.lecun_normal(), CONV, 1 / 576)
    assert_var(init.lecun_normal(gain=init.calculate_gain("tanh")), (30, 200), (5 / 3) ** 2 / 30)


def test_torch_default():
    for shape in (DENSE, CONV):
        fan_in = init.compute_fans(shape)[0]
        assert_var(init.torch_default(), shape, 1 / (3 * fan_in))
        w = init.torch_default()(jax.random.key(2), shape)
        assert float(jnp.abs(w).max()) <= 1 / math.sqrt(fan_in)
    b = init.torch_default_bias(576)(jax.random.key(3), (4096,))
    assert float(jnp.abs(b).max()) <= 1 / 24
    assert abs(float(jnp.var(b)) * 3 * 576 - 1) < 0.1


def test_calculate_gain():
    assert init.calculate_gain("linear") == 1.0
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu", 0.1) == pytest.approx(math.sqrt(2 / 1.01))
    with pytest.raises(ValueError):
        init.calculate_gain("swish")


def test_usable_as_flax_kernel_init():
    layer = nn.Conv(8, (3, 3), kernel_init=init.kaiming_normal(a=0.1), dtype=jnp.bfloat16)
    v = layer.init(jax.random.key(0), jnp.ones((1, 5, 5, 2)))
    chex.assert_shape(v["params"]["kernel"], (3, 3, 2, 8))
    w = init.glorot_uniform()(jax.random.key(0), (4, 4), jnp.bfloat16)
    assert w.dtype == jnp.bfloat16


# ---------------------------------------------------------------------- LSUV


class CNN(nn.Module):
    """Lesson-17-style stride-2 convs with GeneralRelu; optional BatchNorm."""

    norm: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        for nf in (8, 16, 32):
            x = nn.Conv(nf, (3, 3), strides=2)(x)
            if self.norm:
                x = BatchNorm()(x, use_running_average=not train)
            x = GeneralRelu(leak=0.1, sub=0.4)(x)
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


class SharedAct(nn.Module):
    """One activation module (setup style) called after every layer."""

    def setup(self):
        self.convs = [nn.Conv(8, (3, 3)), nn.Conv(8, (3, 3))]
        self.act = GeneralRelu(sub=0.4)

    def __call__(self, x):
        for conv in self.convs:
            x = self.act(conv(x))
        return x


class FunctionalRelu(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Dense(4)(x))


def act_stats(model, variables, x, **kw):
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=["batch_stats"], **kw)
    out = {}
    for name, calls in jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]:
        key = jax.tree_util.keystr(name)
        if "GeneralRelu" in key or "act" in key:
            out[key] = (float(calls.mean()), float(calls.std()))
    return out


@pytest.fixture(scope="module")
def batch():
    return jax.random.normal(jax.random.key(0), (64, 16, 16, 1)) * 0.35 + 0.28


def test_lsuv_unit_stats(batch):
    model = CNN()
    v = model.init(jax.random.key(1), batch)
    assert init.find_lsuv_pairs(model, v, batch) == [
        ("Conv_0", "GeneralRelu_0"),
        ("Conv_1", "GeneralRelu_1"),
        ("Conv_2", "GeneralRelu_2"),
    ]
    before = jax.tree.map(np.array, v)
    new = init.lsuv(model, v, batch, tol=1e-3)
    chex.assert_trees_all_equal(v, before)  # pure
    stats = act_stats(model, new, batch)
    assert len(stats) == 3
    for mean, std in stats.values():
        assert abs(mean) < 1e-3 and abs(std - 1) < 1e-3
    # the final classifier has no activation after it, so it is untouched
    chex.assert_trees_all_equal(new["params"]["Dense_0"], v["params"]["Dense_0"])


def test_lsuv_explicit_pairs_and_own_output(batch):
    model = CNN()
    v = model.init(jax.random.key(1), batch)
    new = init.lsuv(model.apply, v, (batch, None), pairs=[("Conv_0", "Conv_0")])
    h = nn.Conv(8, (3, 3), strides=2).apply({"params": new["params"]["Conv_0"]}, batch)
    assert abs(float(h.mean())) < 1e-3 and abs(float(h.std()) - 1) < 1e-3
    chex.assert_trees_all_equal(new["params"]["Conv_1"], v["params"]["Conv_1"])


def test_lsuv_shared_activation_module(batch):
    model = SharedAct()
    v = model.init(jax.random.key(1), batch)
    pairs = init.find_lsuv_pairs(model, v, batch)
    assert pairs == [("convs_0", "act"), ("convs_1", "act")]
    new = init.lsuv(model, v, batch)
    _, state = model.apply(new, batch, capture_intermediates=True)
    for h in state["intermediates"]["act"]["__call__"]:
        assert abs(float(h.mean())) < 1e-3 and abs(float(h.std()) - 1) < 1e-3


def test_lsuv_with_batchnorm(batch):
    model = CNN(norm=True)
    v = model.init(jax.random.key(1), batch)
    new = init.lsuv(model, v, batch, train=False)
    chex.assert_trees_all_equal(new["batch_stats"], v["batch_stats"])
    for mean, std in act_stats(model, new, batch, train=False).values():
        assert abs(mean) < 1e-3 and abs(std - 1) < 1e-3
    # In train mode BN re-normalises the conv output: LSUV cannot move it.
    with pytest.raises(RuntimeError, match="Conv_0"):
        init.lsuv(model, v, batch, max_iters=3, train=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        init.lsuv(model, v, batch, max_iters=2, strict=False, train=True)
    assert any("did not converge" in str(w.message) for w in caught)


def test_lsuv_needs_activation_modules():
    model = FunctionalRelu()
    x = jnp.ones((8, 3))
    v = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="pairs="):
        init.lsuv(model, v, x)


def test_torch_reinit_draws_as_pytorchs_defaults():
    from jaxlearn.nn.torch_init import torch_reinit
    from jaxlearn.text import CharSeqRnn

    model = CharSeqRnn(60, n_fac=42, n_hidden=256, identity_init=True)
    params = model.init(jax.random.key(0), jnp.zeros((2, 8), jnp.int32))["params"]
    new = torch_reinit(params, jax.random.key(1), recurrent=lambda path: path[:1] == ("rnn",))
    chex.assert_trees_all_equal_shapes_and_dtypes(new, params)
    # nn.Embedding: N(0, 1)
    assert abs(float(jnp.std(new["e"]["embedding"])) - 1.0) < 0.05
    # nn.Linear(256, 60): weight and bias U(±1/16); uniform's std = bound/√3
    for leaf in (new["l_out"]["kernel"], new["l_out"]["bias"]):
        assert float(jnp.abs(leaf).max()) <= 1 / 16 and float(jnp.abs(leaf).max()) > 0.9 / 16
    assert abs(float(jnp.std(new["l_out"]["kernel"])) - 1 / 16 / math.sqrt(3)) < 0.002
    # nn.RNN(42, 256): every weight and bias U(±1/√256), the input kernel's fan-in (42) notwithstanding
    cell = new["rnn"]["cell"]
    assert 0.9 / 16 < float(jnp.abs(cell["i"]["kernel"]).max()) <= 1 / 16
    assert 0.9 / 16 < float(jnp.abs(cell["i"]["bias"]).max()) <= 1 / 16
    # the lesson copies eye() in after PyTorch's init: an identity recurrent matrix stays
    np.testing.assert_array_equal(cell["h"]["kernel"], np.eye(256))
