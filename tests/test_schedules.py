"""jaxlearn.optim.schedules: shapes from the lessons and agreement with optax."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn import optim
from jaxlearn.optim import schedules

STEPS = jnp.arange(0, 130)


def _values(schedule, steps=STEPS):
    # vmap: the schedule sees a traced step, as inside a jitted train step.
    return np.asarray(jax.vmap(schedule)(steps))


def test_one_cycle_shape():
    max_lr, total, div, div_final = 0.4, 100, 25.0, 1e5
    lr = _values(schedules.one_cycle(max_lr, total, pct_start=0.25, div=div, div_final=div_final))
    np.testing.assert_allclose(lr[0], max_lr / div, rtol=1e-6)
    assert lr.argmax() == 25
    np.testing.assert_allclose(lr[25], max_lr, rtol=1e-6)
    # fastai 2 ends at max_lr / div_final (see the module docstring).
    np.testing.assert_allclose(lr[total:], max_lr / div_final, rtol=1e-4)
    assert np.all(np.diff(lr[:26]) > 0) and np.all(np.diff(lr[25:total + 1]) < 0)


def test_one_cycle_matches_optax():
    ours = schedules.one_cycle(0.4, 100, pct_start=0.25, div=25.0, div_final=1e5)
    theirs = optax.cosine_onecycle_schedule(
        100, 0.4, pct_start=0.25, div_factor=25.0, final_div_factor=1e5 / 25.0)
    # optax's own float32 rounding near the tiny final lr is ~3e-5 relative.
    np.testing.assert_allclose(_values(ours), _values(theirs), rtol=1e-4)


def test_one_cycle_matches_fastai_formula_in_float64():
    def sched_cos(start, end, pos):  # fastai
        return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2

    def fastai_one_cycle(pos, lr_max=0.4, pct=0.25):
        if pos < pct:
            return sched_cos(lr_max / 25, lr_max, pos / pct)
        return sched_cos(lr_max, lr_max / 1e5, (pos - pct) / (1 - pct))

    expected = [fastai_one_cycle(min(i / 100, 1.0)) for i in range(130)]
    np.testing.assert_allclose(_values(schedules.one_cycle(0.4, 100)), expected, rtol=1e-5)


def test_one_cycle_momentum_mirrors_lr():
    mom = _values(schedules.one_cycle_momentum(100, pct_start=0.25, moms=(0.95, 0.85, 0.95)))
    np.testing.assert_allclose(mom[[0, 25, 100, 129]], [0.95, 0.85, 0.95, 0.95], rtol=1e-6)
    assert mom.argmin() == 25


def test_sgdr_restarts_and_span():
    spe, base_lr = 10, 0.1
    lr = _values(schedules.sgdr(base_lr, spe, cycle_len=1, cycle_mult=2, n_cycles=3))
    ends = schedules.sgdr_cycle_ends(spe, cycle_len=1, cycle_mult=2, n_cycles=3)
    assert ends == [spe, 3 * spe, 7 * spe]  # cycles of 1, 2, 4 epochs
    np.testing.assert_allclose(lr[[0, spe, 3 * spe]], base_lr, rtol=1e-6)  # restarts
    # Each cycle anneals: half-way through it the lr is base/2, just before the end ~0.
    np.testing.assert_allclose(lr[[spe // 2, spe + spe, 3 * spe + 2 * spe]], base_lr / 2, rtol=1e-5)
    assert np.all(lr[[e - 1 for e in ends]] < 0.03 * base_lr)
    np.testing.assert_array_equal(lr[7 * spe:], 0.0)  # finished after 7 epochs


def test_sgdr_warmup_holds_lr_over_100_then_joins_the_cosine():
    # fastai 0.7 CosAnneal: init_lrs / 100 while iteration < nb / 20, the cycle's clock counting on.
    spe, base_lr = 40, 0.1
    plain = _values(schedules.sgdr(base_lr, spe, 1, 2))
    warm = _values(schedules.sgdr(base_lr, spe, 1, 2, warmup_steps=spe // 20))
    np.testing.assert_allclose(warm[:2], base_lr / 100, rtol=1e-6)
    np.testing.assert_allclose(warm[2:], plain[2:], rtol=1e-6)


def test_sgdr_matches_optax():
    spe, base_lr = 10, 0.1
    theirs = optax.sgdr_schedule([
        dict(init_value=base_lr, peak_value=base_lr, warmup_steps=0,
             decay_steps=spe * 2**k, end_value=0.0)
        for k in range(3)
    ])
    np.testing.assert_allclose(
        _values(schedules.sgdr(base_lr, spe, 1, 2, n_cycles=3)), _values(theirs), atol=1e-7)


@pytest.mark.parametrize("cycle_len, cycle_mult", [(1, 1), (2, 3)])
def test_sgdr_without_cycle_limit_restarts_forever(cycle_len, cycle_mult):
    spe = 7
    ends = schedules.sgdr_cycle_ends(spe, cycle_len, cycle_mult, n_cycles=8)
    lr = _values(schedules.sgdr(1.0, spe, cycle_len, cycle_mult), jnp.asarray(ends))
    np.testing.assert_allclose(lr, 1.0, rtol=1e-6)
    before = _values(schedules.sgdr(1.0, spe, cycle_len, cycle_mult), jnp.asarray(ends) - 1)
    assert np.all(before < 0.06)


def test_warmup_cosine_matches_optax():
    ours = schedules.warmup_cosine(1.0, warmup_steps=10, total_steps=100, end_lr=0.1)
    theirs = optax.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100, end_value=0.1)
    np.testing.assert_allclose(_values(ours), _values(theirs), atol=1e-6)
    np.testing.assert_allclose(_values(ours)[[0, 10, 100, 129]], [0.0, 1.0, 0.1, 0.1], atol=1e-6)


def test_warmup_linear_matches_optax():
    ours = schedules.warmup_linear(1.0, warmup_steps=10, total_steps=100, end_lr=0.1)
    theirs = optax.join_schedules(
        [optax.linear_schedule(0.0, 1.0, 10), optax.linear_schedule(1.0, 0.1, 90)], [10])
    np.testing.assert_allclose(_values(ours), _values(theirs), atol=1e-6)


def test_schedules_are_jittable_and_drive_optimizers():
    for schedule in [
        schedules.one_cycle(1.0, 50),
        schedules.one_cycle_momentum(50),
        schedules.sgdr(1.0, 5, n_cycles=2),
        schedules.sgdr(1.0, 5),
        schedules.warmup_cosine(1.0, 5, 50),
        schedules.warmup_linear(1.0, 5, 50),
    ]:
        np.testing.assert_allclose(jax.jit(schedule)(17), schedule(17), rtol=1e-6)
    # As an optax learning rate, evaluated at the step count (0 first).
    tx = optim.sgd(schedules.one_cycle(1.0, 50))
    params = jnp.ones(2)
    state = tx.init(params)
    for step in range(3):
        updates, state = jax.jit(tx.update)(jnp.ones(2), state, params)
        np.testing.assert_allclose(updates, -schedules.one_cycle(1.0, 50)(step), rtol=1e-6)
