"""jaxlearn.optim against optax's own optimizers and against the miniai formulas."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn import optim

N_STEPS = 100
LR = 1e-2


def _problem(seed: int = 0):
    """Params of two layers, a target and 100 steps of gradient noise (float32)."""
    keys = jax.random.split(jax.random.key(seed), 5)
    params = {
        "Dense_0": {"kernel": jax.random.normal(keys[0], (4, 3)), "bias": jnp.zeros(3)},
        "Dense_1": {"kernel": jax.random.normal(keys[1], (3, 2))},
    }
    target = jax.tree.map(lambda p: jax.random.normal(keys[2], p.shape), params)
    noise = jax.tree.map(
        lambda p: jax.random.normal(keys[3], (N_STEPS, *p.shape)), params)
    return params, target, noise


def _grad(params, target, noise):
    # Gradient of 0.5|p - target|^2 plus noise: depends on params, so two
    # optimizers only stay together if every step agrees.
    return jax.tree.map(lambda p, t, n: p - t + n, params, target, noise)


def _trajectory(tx, params, target, noise, state=None):
    """Params after each of the N_STEPS steps, stacked on a leading axis."""
    def step(carry, n):
        p, s = carry
        updates, s = tx.update(_grad(p, target, n), s, p)
        p = optax.apply_updates(p, updates)
        return (p, s), p

    state = tx.init(params) if state is None else state
    return jax.jit(lambda: jax.lax.scan(step, (params, state), noise)[1])()


def _assert_same_trajectory(ours, reference, state=None):
    params, target, noise = _problem()
    chex.assert_trees_all_close(
        _trajectory(ours, params, target, noise),
        _trajectory(reference, params, target, noise, state),
        rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------
# Equal to optax with matched settings, over 100 steps
# ----------------------------------------------------------------------------


def test_sgd_matches_optax():
    _assert_same_trajectory(optim.sgd(LR), optax.sgd(LR))
    _assert_same_trajectory(
        optim.sgd(LR, weight_decay=0.1),
        optax.chain(optax.add_decayed_weights(0.1), optax.sgd(LR)))


@pytest.mark.parametrize("nesterov", [False, True])
def test_heavy_ball_momentum_matches_optax_sgd(nesterov):
    _assert_same_trajectory(
        optim.momentum(LR, beta=0.9, lerp=False, nesterov=nesterov),
        optax.sgd(LR, momentum=0.9, nesterov=nesterov))


@pytest.mark.parametrize("nesterov", [False, True])
def test_lerp_momentum_is_heavy_ball_with_scaled_lr(nesterov):
    # miniai's EMA momentum = heavy ball with lr * (1 - beta).
    _assert_same_trajectory(
        optim.momentum(LR, beta=0.8, nesterov=nesterov),
        optax.sgd(LR * (1 - 0.8), momentum=0.8, nesterov=nesterov))


def test_rmsprop_zero_start_matches_optax():
    _assert_same_trajectory(
        optim.rmsprop(LR, decay=0.99, eps=1e-5, init_with_first_grad=False),
        optax.rmsprop(LR, decay=0.99, eps=1e-5, eps_in_sqrt=False, initial_scale=0.0))


def test_rmsprop_first_grad_init_matches_optax_seeded_with_g1_squared():
    # optax.rmsprop's initial_scale is one constant; miniai seeds each entry
    # with its own first g**2, so set optax's nu to g1**2 after init.
    params, target, noise = _problem()
    g1 = _grad(params, target, jax.tree.map(lambda n: n[0], noise))
    reference = optax.rmsprop(LR, decay=0.99, eps=1e-5, eps_in_sqrt=False)
    state = optax.tree_utils.tree_set(
        reference.init(params), nu=jax.tree.map(jnp.square, g1))
    _assert_same_trajectory(optim.rmsprop(LR, decay=0.99, eps=1e-5), reference, state)


def test_adam_matches_optax():
    # miniai course code: eps inside the sqrt = optax's eps_root.
    _assert_same_trajectory(
        optim.adam(LR), optax.adam(LR, b1=0.9, b2=0.99, eps=0.0, eps_root=1e-5))
    _assert_same_trajectory(
        optim.adam(LR, b2=0.999, eps=1e-8, eps_in_sqrt=False), optax.adam(LR))


def test_adamw_matches_optax():
    _assert_same_trajectory(
        optim.adamw(LR, weight_decay=0.1),
        optax.adamw(LR, b1=0.9, b2=0.99, eps=0.0, eps_root=1e-5, weight_decay=0.1))
    _assert_same_trajectory(
        optim.adam(LR, weight_decay=0.1, eps_in_sqrt=False),
        optax.adamw(LR, b1=0.9, b2=0.99, eps=1e-5, weight_decay=0.1))


def test_lr_schedule_matches_optax():
    schedule = optax.linear_schedule(LR, 0.0, N_STEPS)
    _assert_same_trajectory(optim.sgd(schedule), optax.sgd(schedule))
    _assert_same_trajectory(optim.adam(schedule, eps_in_sqrt=False), optax.adam(schedule, b2=0.99, eps=1e-5))


def test_clipping_matches_optax():
    params, target, noise = _problem()
    for scale in (0.1, 100.0):  # a norm below and one above the limit
        grads = jax.tree.map(lambda n: scale * n[0], noise)
        for ours, reference in [
            (optim.clip_elementwise(0.5), optax.clip(0.5)),
            (optim.clip_global_norm(1.0), optax.clip_by_global_norm(1.0)),
        ]:
            chex.assert_trees_all_close(
                ours.update(grads, ours.init(params))[0],
                reference.update(grads, reference.init(params))[0],
                rtol=1e-6, atol=1e-7)


def test_global_norm_clip_keeps_direction():
    grads = {"a": jnp.array([30.0, 40.0])}
    clipped, _ = optim.clip_global_norm(5.0).update(grads, optax.EmptyState())
    chex.assert_trees_all_close(clipped, {"a": jnp.array([3.0, 4.0])})


# ----------------------------------------------------------------------------
# L2 vs decoupled weight decay (DLVU, fast.ai 2018 lesson 5)
# ----------------------------------------------------------------------------


def test_l2_equals_weight_decay_for_sgd_only():
    params, target, noise = _problem()
    wd = 0.1
    l2_sgd = _trajectory(optax.chain(optim.add_l2(wd), optim.sgd(LR)), params, target, noise)
    wd_sgd = _trajectory(optim.sgd(LR, weight_decay=wd), params, target, noise)
    chex.assert_trees_all_equal(l2_sgd, wd_sgd)

    l2_adam = _trajectory(optax.chain(optim.add_l2(wd), optim.adam(LR)), params, target, noise)
    adamw = _trajectory(optim.adam(LR, weight_decay=wd), params, target, noise)
    gap = max(jax.tree.leaves(jax.tree.map(lambda a, b: jnp.abs(a - b).max(), l2_adam, adamw)))
    assert gap > 1e-3


def test_zero_weight_decay_is_the_identity():
    """A plain 0 adds nothing at all: an inf parameter (0 · inf = nan) leaves the update finite."""
    params = {"w": jnp.array([jnp.inf, 1.0])}
    grads = {"w": jnp.array([0.5, -0.5])}
    for transform in (optim.decay_weights(0.0), optim.add_l2(0), optim.sgd(LR)):
        updates, _ = transform.update(grads, transform.init(params), params)
        assert bool(jnp.isfinite(updates["w"]).all())
    decaying = optim.sgd(LR, weight_decay=0.1)
    updates, _ = decaying.update(grads, decaying.init(params), params)
    assert not bool(jnp.isfinite(updates["w"]).all())  # a real decay does read the params


# ----------------------------------------------------------------------------
# The first three steps by hand (numpy, float64, miniai's class code)
# ----------------------------------------------------------------------------

P0 = np.array([0.5, -1.0, 2.0, 0.0])
GRADS = np.array([[0.1, -0.2, 0.3, 1.0], [0.4, 0.0, -0.1, 2.0], [-0.3, 0.2, 0.2, -1.0]])
WD = 0.1


def _miniai_sgd(lr):
    p = P0.copy()
    for g in GRADS:
        p *= 1 - lr * WD  # SGD.reg_step
        p -= lr * g       # SGD.opt_step
        yield p.copy()


def _miniai_momentum(lr, mom=0.9):
    p, avg = P0.copy(), np.zeros_like(P0)
    for g in GRADS:
        p *= 1 - lr * WD
        avg = avg * mom + g * (1 - mom)
        p -= lr * avg
        yield p.copy()


def _torch_nesterov(lr, mom=0.9):
    p, buf = P0.copy(), np.zeros_like(P0)
    for g in GRADS:
        p *= 1 - lr * WD
        buf = mom * buf + g
        p -= lr * (g + mom * buf)
        yield p.copy()


def _miniai_rmsprop(lr, sqr_mom=0.99, eps=1e-5):
    p, sqr_avg = P0.copy(), None
    for g in GRADS:
        p *= 1 - lr * WD
        sqr_avg = g**2 if sqr_avg is None else sqr_avg
        sqr_avg = sqr_avg * sqr_mom + g**2 * (1 - sqr_mom)
        p -= lr * g / (np.sqrt(sqr_avg) + eps)
        yield p.copy()


def _miniai_adam(lr, beta1=0.9, beta2=0.99, eps=1e-5):
    p, avg, sqr_avg = P0.copy(), np.zeros_like(P0), np.zeros_like(P0)
    for i, g in enumerate(GRADS):
        p *= 1 - lr * WD
        avg = beta1 * avg + (1 - beta1) * g
        unbias_avg = avg / (1 - beta1 ** (i + 1))
        sqr_avg = beta2 * sqr_avg + (1 - beta2) * g**2
        unbias_sqr_avg = sqr_avg / (1 - beta2 ** (i + 1))
        p -= lr * unbias_avg / np.sqrt(unbias_sqr_avg + eps)
        yield p.copy()


@pytest.mark.parametrize(
    "tx, by_hand",
    [
        (optim.sgd(0.1, weight_decay=WD), _miniai_sgd(0.1)),
        (optim.momentum(0.1, weight_decay=WD), _miniai_momentum(0.1)),
        (optim.momentum(0.1, weight_decay=WD, lerp=False, nesterov=True), _torch_nesterov(0.1)),
        (optim.rmsprop(0.1, weight_decay=WD), _miniai_rmsprop(0.1)),
        (optim.adamw(0.1, weight_decay=WD), _miniai_adam(0.1)),
    ],
    ids=["sgd", "momentum", "nesterov", "rmsprop", "adamw"],
)
def test_first_three_steps_by_hand(tx, by_hand):
    params = jnp.asarray(P0, jnp.float32)
    state = tx.init(params)
    for g, expected in zip(GRADS, by_hand):
        updates, state = tx.update(jnp.asarray(g, jnp.float32), state, params)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(params, expected, rtol=1e-6, atol=1e-6)


def test_rmsprop_first_step_is_sign_of_gradient():
    # The point of the first-g^2 seed: no 1/sqrt(1-decay) = 10x first step.
    g = jnp.array([1e-3, -5.0])
    seeded, _ = optim.scale_by_rms().update(g, optim.scale_by_rms().init(g))
    zero, _ = optim.scale_by_rms(init_with_first_grad=False).update(g, optim.scale_by_rms().init(g))
    chex.assert_trees_all_close(seeded, jnp.sign(g), atol=1e-2)
    chex.assert_trees_all_close(zero, 10 * jnp.sign(g), rtol=1e-1)


# ----------------------------------------------------------------------------
# inject_hyperparams: lr changed at run time without recompiling
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("alias", [optim.sgd, optim.momentum, optim.rmsprop, optim.adam, optim.adamw])
def test_injected_alias_equals_alias_and_lr_changes_without_retrace(alias):
    params, target, noise = _problem()
    injected = optax.inject_hyperparams(alias)(learning_rate=LR)
    traces = []

    @jax.jit
    def step(p, s, n):
        traces.append(None)  # runs only while tracing
        updates, s = injected.update(_grad(p, target, n), s, p)
        return optax.apply_updates(p, updates), s

    lrs = [LR, 2 * LR, 0.5 * LR, 3 * LR]
    p, s = params, injected.init(params)
    ref = alias(LR)
    p_ref, s_ref = params, ref.init(params)
    for i, lr in enumerate(lrs):
        s = optax.tree_utils.tree_set(s, learning_rate=jnp.asarray(lr, jnp.float32))
        n = jax.tree.map(lambda x: x[i], noise)
        p, s = step(p, s, n)
        # Same state, fixed-lr alias at this step's lr: the injected lr is used.
        updates, s_ref = alias(lr).update(_grad(p_ref, target, n), s_ref, p_ref)
        p_ref = optax.apply_updates(p_ref, updates)
        chex.assert_trees_all_close(p, p_ref, rtol=1e-6, atol=1e-6)
    assert len(traces) == 1


def test_set_hyperparams_keeps_dtype_so_python_floats_do_not_retrace():
    params, target, noise = _problem()
    tx = optax.inject_hyperparams(optim.momentum)(learning_rate=LR)
    traces = []

    @jax.jit
    def step(p, s):
        traces.append(None)  # runs only while tracing
        updates, s = tx.update(_grad(p, target, jax.tree.map(lambda x: x[0], noise)), s, p)
        return optax.apply_updates(p, updates), s

    p, s = step(params, tx.init(params))
    for lr, beta in [(0.1, 0.8), (0.2, 0.9)]:
        s = optim.set_hyperparams(s, learning_rate=lr, beta=beta)
        p, s = step(p, s)
    assert len(traces) == 1
    assert s.hyperparams["beta"].dtype == jnp.float32
    with pytest.raises(KeyError):
        optim.set_hyperparams(s, lr=0.1)


def test_injected_schedule_equals_alias_with_schedule():
    schedule = optax.cosine_decay_schedule(LR, N_STEPS)
    _assert_same_trajectory(
        optax.inject_hyperparams(optim.adam)(learning_rate=schedule), optim.adam(schedule))


# ----------------------------------------------------------------------------
# Differential learning rates and freezing (fast.ai 2018)
# ----------------------------------------------------------------------------


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        for _ in range(11):
            x = nn.relu(nn.Dense(4)(x))
        return nn.Dense(1)(x)


@functools.cache  # flax init is slow eagerly; the tests never mutate the params
def _mlp_problem():
    x = jax.random.normal(jax.random.key(1), (16, 3))
    y = jax.random.normal(jax.random.key(2), (16, 1))
    params = _MLP().init(jax.random.key(0), x)["params"]

    def loss(p):
        return jnp.mean((_MLP().apply({"params": p}, x) - y) ** 2)

    return params, jax.grad(loss)


def test_param_groups_follow_layer_order():
    params, _ = _mlp_problem()
    labels = optim.param_groups(params, 3)
    # 12 layers in creation order (Dense_10 after Dense_9, not after Dense_1).
    by_layer = [labels[f"Dense_{i}"]["kernel"] for i in range(12)]
    assert by_layer == [0] * 4 + [1] * 4 + [2] * 4
    assert all(labels[f"Dense_{i}"]["bias"] == labels[f"Dense_{i}"]["kernel"] for i in range(12))
    head_only = optim.param_groups(params, lambda name: int(name == "Dense_11"))
    assert head_only["Dense_11"]["kernel"] == 1 and head_only["Dense_0"]["bias"] == 0
    with pytest.raises(ValueError):
        optim.param_groups(params, 13)


def test_lr_range():
    np.testing.assert_allclose(optim.lr_range(0.9, 3), (0.1, 0.3, 0.9))
    np.testing.assert_allclose(optim.lr_range(1.0, 2, factor=10), (0.1, 1.0))


def test_differential_lrs_per_group():
    params, _ = _mlp_problem()
    labels = optim.param_groups(params, 3)
    lrs = optim.lr_range(0.9, 3)
    tx = optim.differential(optim.sgd, lrs, labels)
    grads = jax.tree.map(jnp.ones_like, params)
    state = tx.init(params)
    for scale in (1.0, 0.1):  # the shared lr set as by a schedule keeps the ratios
        state = optim.set_hyperparams(state, learning_rate=0.9 * scale)
        updates, _ = tx.update(grads, state, params)
        expected = jax.tree.map(lambda label: jnp.full((), -lrs[label] * scale), labels)
        chex.assert_trees_all_close(
            jax.tree.map(lambda u: u.reshape(-1)[0], updates), expected, rtol=1e-6)


def _bits(tree):
    return jax.tree.map(lambda x: np.asarray(x).view(np.uint32), tree)


def test_freezing_is_state_only_and_exact():
    params, grad_fn = _mlp_problem()
    labels = optim.param_groups(params, 3)
    tx = optim.differential(optim.adam, optim.lr_range(1e-2, 3), labels, weight_decay=0.1)
    traces = []

    @jax.jit
    def step(p, s):
        traces.append(None)  # runs only while tracing
        updates, s = tx.update(grad_fn(p), s, p)
        return optax.apply_updates(p, updates), s

    def in_group(tree, group):
        return {k: v for k, v in tree.items() if labels[k]["kernel"] == group}

    p0, s = params, optim.freeze(tx.init(params))
    p = p0
    for _ in range(3):
        p, s = step(p, s)
    # Groups 0 and 1 frozen: bitwise unchanged (weight decay included); head moved.
    for group in (0, 1):
        chex.assert_trees_all_equal(_bits(in_group(p, group)), _bits(in_group(p0, group)))
    assert not np.allclose(p["Dense_11"]["kernel"], p0["Dense_11"]["kernel"])

    p1, s = p, optim.freeze_to(s, 1)
    for _ in range(2):
        p, s = step(p, s)
    chex.assert_trees_all_equal(_bits(in_group(p, 0)), _bits(in_group(p1, 0)))
    assert not np.allclose(p["Dense_4"]["kernel"], p1["Dense_4"]["kernel"])

    p2, s = p, optim.unfreeze(s)
    # The Learner's schedule hook changes the shared lr; the ratios survive it.
    s = optim.set_hyperparams(s, learning_rate=5e-3)
    p, s = step(p, s)
    assert not np.allclose(p["Dense_0"]["kernel"], p2["Dense_0"]["kernel"])
    assert len(traces) == 1


def test_freeze_to_sets_trainable_flags():
    params, _ = _mlp_problem()
    tx = optim.differential(optim.sgd, optim.lr_range(1.0, 3), optim.param_groups(params, 3))
    state = tx.init(params)

    def trainable(s):
        return [float(s.inner_states[g].inner_state.hyperparams["trainable"]) for g in range(3)]

    assert trainable(state) == [1.0, 1.0, 1.0]
    assert trainable(optim.freeze(state)) == [0.0, 0.0, 1.0]
    assert trainable(optim.freeze_to(state, 2)) == [0.0, 0.0, 1.0]
    assert trainable(optim.freeze_to(state, 1)) == [0.0, 1.0, 1.0]
    assert trainable(optim.freeze_to(state, 3)) == [0.0, 0.0, 0.0]
    assert trainable(optim.unfreeze(optim.freeze(state))) == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError):
        optim.freeze(optax.sgd(1.0).init(params))
