"""Our norms equal flax's built-ins; calibrate_batchnorm gives whole-set statistics."""

import warnings

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.nn import BatchNorm, GroupNorm, InstanceNorm, LayerNorm, calibrate_batchnorm

TOL = dict(atol=1e-5, rtol=1e-5)
SHAPE = (8, 6, 6, 12)


# Test data comes from NumPy: eager jax.random compiles a kernel per shape, slowly.


def batches(n, shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    # non-zero means and non-unit scales per channel, so the stats matter
    scales = np.linspace(0.5, 3, shape[-1], dtype=np.float32)
    return [jnp.asarray(rng.standard_normal(shape, np.float32) * scales + 2) for _ in range(n)]


def np_init(model, x, seed=0, **kwargs):
    """``model.init`` without compiling jax.random: shapes from eval_shape, values
    from NumPy (params ~ N(0, 1/fan_in), running mean 0 / var 1)."""
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, **kwargs), x)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "batch_stats" in name:
            return jnp.full(leaf.shape, 1.0 if "var" in name else 0.0)
        fan_in = np.prod(leaf.shape[:-1]) if len(leaf.shape) > 1 else 1
        return jnp.asarray(rng.standard_normal(leaf.shape, np.float32) / np.sqrt(fan_in))

    return jax.tree_util.tree_map_with_path(fill, shapes)


def random_affine(variables, seed=1):
    """Replace ones/zeros scale/bias (and kernels) by random values, so a swapped name shows."""
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape, np.float32)), variables["params"])
    return {**variables, "params": params}


@pytest.mark.parametrize("shape", [SHAPE, (16, 12)])
def test_batchnorm_matches_flax(shape):
    ours, theirs = BatchNorm(), nn.BatchNorm(momentum=0.9, epsilon=1e-5)
    xs = batches(4, shape)
    v_ours = ours.init(jax.random.key(0), xs[0], use_running_average=False)
    v_theirs = theirs.init(jax.random.key(0), xs[0], use_running_average=False)
    chex.assert_trees_all_equal_shapes(v_ours, v_theirs)  # same names and shapes
    v_ours = random_affine(v_ours)
    v_theirs = {**v_theirs, "params": v_ours["params"]}
    # init must not touch the running stats (as flax)
    chex.assert_trees_all_equal(v_ours["batch_stats"], v_theirs["batch_stats"])
    for x in xs[:3]:
        y1, s1 = ours.apply(v_ours, x, use_running_average=False, mutable=["batch_stats"])
        y2, s2 = theirs.apply(v_theirs, x, use_running_average=False, mutable=["batch_stats"])
        chex.assert_trees_all_close(y1, y2, **TOL)
        chex.assert_trees_all_close(s1["batch_stats"], s2["batch_stats"], **TOL)
        v_ours = {**v_ours, **s1}
        v_theirs = {**v_theirs, **s2}
    # after 3 updates the running stats have really moved from (0, 1)
    assert float(jnp.abs(v_ours["batch_stats"]["mean"]).min()) > 0.3  # ~0.27 * 2
    # eval: attribute default or call argument, both like flax
    y1 = BatchNorm(use_running_average=True).apply(v_ours, xs[3])
    y2 = theirs.apply(v_theirs, xs[3], use_running_average=True)
    chex.assert_trees_all_close(y1, y2, **TOL)


def test_batchnorm_train_output_is_standardized():
    x = batches(1)[0]
    bn = BatchNorm()
    v = bn.init(jax.random.key(0), x, use_running_average=False)
    y, _ = bn.apply(v, x, use_running_average=False, mutable=["batch_stats"])
    chex.assert_trees_all_close(y.mean((0, 1, 2)), jnp.zeros(12), atol=1e-5)
    chex.assert_trees_all_close(y.var((0, 1, 2)), jnp.ones(12), atol=1e-3)  # eps 1e-5 inside


def test_batchnorm_momentum_is_the_lessons_lerp():
    x = batches(1)[0]
    bn = BatchNorm(mom=0.1)
    v = bn.init(jax.random.key(0), x, use_running_average=False)
    _, s = bn.apply(v, x, use_running_average=False, mutable=["batch_stats"])
    chex.assert_trees_all_close(s["batch_stats"]["mean"], 0.1 * x.mean((0, 1, 2)), **TOL)
    chex.assert_trees_all_close(s["batch_stats"]["var"], 0.9 + 0.1 * x.var((0, 1, 2)), **TOL)
    with pytest.raises(Exception):  # no mode given anywhere: flax's merge_param error
        bn.apply(v, x)


def _compare(ours, theirs, x):
    v = random_affine(ours.init(jax.random.key(0), x))
    v_theirs = theirs.init(jax.random.key(0), x)
    chex.assert_trees_all_equal_shapes(v, v_theirs)
    expected = theirs.apply(v, x)
    for mode in (False, True):  # accepted and ignored
        chex.assert_trees_all_close(ours.apply(v, x, use_running_average=mode), expected, **TOL)


def test_layernorm_matches_flax():
    x = batches(1)[0]
    _compare(LayerNorm(), nn.LayerNorm(reduction_axes=(1, 2, 3), feature_axes=(), epsilon=1e-5), x)
    # per item: every sample has mean 0 / var 1 over (H, W, C)
    y = LayerNorm().apply(LayerNorm().init(jax.random.key(0), x), x)
    chex.assert_trees_all_close(y.mean((1, 2, 3)), jnp.zeros(8), atol=1e-5)
    x2 = batches(1, (16, 12))[0]
    _compare(LayerNorm(), nn.LayerNorm(reduction_axes=-1, feature_axes=(), epsilon=1e-5), x2)


def test_instancenorm_matches_flax_groupnorm():
    _compare(InstanceNorm(), nn.GroupNorm(num_groups=12, epsilon=1e-5), batches(1)[0])
    with pytest.raises(ValueError):
        InstanceNorm().init(jax.random.key(0), jnp.ones((4, 12)))


@pytest.mark.parametrize("groups", [1, 3, 4])
def test_groupnorm_matches_flax(groups):
    _compare(GroupNorm(groups), nn.GroupNorm(num_groups=groups, epsilon=1e-5), batches(1)[0])
    with pytest.raises(ValueError):
        GroupNorm(5).init(jax.random.key(0), batches(1)[0])


class Block(nn.Module):
    """The lead's builder convention: ``norm()(x, use_running_average=not train)``."""

    norm: type

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(12, (3, 3), use_bias=False)(x)
        return nn.relu(self.norm()(x, use_running_average=not train))


@pytest.mark.parametrize("norm", [BatchNorm, LayerNorm, InstanceNorm, lambda: GroupNorm(4)])
def test_drop_in_calling_convention(norm):
    x = batches(1)[0]
    model = Block(norm)
    v = np_init(model, x)
    y, _ = model.apply(v, x, train=True, mutable=["batch_stats"])
    chex.assert_shape(y, SHAPE)
    chex.assert_tree_all_finite(model.apply(v, x))


# --------------------------------------------------------------- calibration


class BNNet(nn.Module):
    """Three BN layers in a chain: layer k's input depends on layers < k."""

    mom: float = 0.1

    @nn.compact
    def __call__(self, x, train: bool = False):
        for nf in (8, 16, 16):
            x = nn.Conv(nf, (3, 3), strides=2, use_bias=False)(x)
            x = BatchNorm(mom=self.mom)(x, use_running_average=not train)
            x = nn.tanh(x)
        return nn.Dense(4)(x.reshape(x.shape[0], -1))


@jax.jit
def train_step(variables, x):
    return BNNet().apply(variables, x, train=True, mutable=["batch_stats"])


@jax.jit
def whole_set_stats(variables, data):
    """Train-mode forward on the whole set as one batch; mom=1 stores its batch stats."""
    _, state = BNNet(mom=1.0).apply(
        variables, jnp.concatenate(data), train=True, mutable=["batch_stats"]
    )
    return state["batch_stats"]


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(3)
    data = [jnp.asarray(rng.standard_normal((n, 12, 12, 3), np.float32) * 1.5 + 0.7) for n in (32, 32, 32, 17)]
    model = BNNet()
    v = np_init(model, data[0], seed=4)
    # a few train steps so the running stats are an EMA, not the whole-set stats
    for x in data:
        _, s = train_step(v, x)
        v = {**v, **s}
    return model, v, data


def test_calibrate_equals_whole_set_statistics(trained):
    model, v, data = trained
    passes = []

    def loader():
        passes.append(1)
        return iter(data)

    calibrated = calibrate_batchnorm(model, v, loader, train=False)
    expected = whole_set_stats(calibrated, data)
    chex.assert_trees_all_close(calibrated["batch_stats"], expected, **TOL)
    chex.assert_trees_all_equal(calibrated["params"], v["params"])
    # the EMA really was different; the exact answer needed more than one pass
    assert not np.allclose(v["batch_stats"]["BatchNorm_2"]["var"], expected["BatchNorm_2"]["var"], rtol=1e-3)
    assert 3 <= len(passes) <= 4
    # eval output now equals the whole-set train-mode output
    y_eval = model.apply(calibrated, jnp.concatenate(data), train=False)
    y_train, _ = train_step(calibrated, jnp.concatenate(data))
    chex.assert_trees_all_close(y_eval, y_train, atol=1e-4, rtol=1e-4)


def test_calibrate_accepts_apply_fn_and_tuples(trained):
    model, v, data = trained
    pairs = [(x, jnp.zeros(len(x))) for x in data]
    calibrated = calibrate_batchnorm(lambda *a, **kw: model.apply(*a, train=False, **kw), v, pairs)
    chex.assert_trees_all_close(calibrated["batch_stats"], whole_set_stats(calibrated, data), **TOL)


def test_calibrate_errors(trained):
    model, v, data = trained
    with pytest.raises(TypeError, match="one-shot"):
        calibrate_batchnorm(model, v, iter(data), train=False)
    with pytest.raises(ValueError, match="eval mode"):
        calibrate_batchnorm(model, v, data, train=True)


def test_calibrate_warns_about_foreign_batchnorm():
    class Mixed(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = BatchNorm(use_running_average=True)(x)
            return nn.BatchNorm(use_running_average=True)(x)

    x = batches(2)
    v = Mixed().init(jax.random.key(0), x[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = calibrate_batchnorm(Mixed(), v, x)
    assert any("BatchNorm_1" in str(w.message) for w in caught)
    chex.assert_trees_all_close(out["batch_stats"]["BatchNorm_0"]["mean"], jnp.concatenate(x).mean((0, 1, 2)), **TOL)
