r"""Learning-rate / momentum schedules: pure functions ``step -> value``.

Each function returns an optax-compatible schedule (``optax.Schedule``): it
takes the number of optimizer steps already taken (0 for the first step, a
Python int or a traced int array) and uses only ``jnp`` operations, so it can
be passed as ``learning_rate`` to the optimizers in :mod:`jaxlearn.optim`, to
``optax.inject_hyperparams``, or called inside ``jax.jit``.

Sources: fast.ai 2022 (``fit_one_cycle`` / ``combined_cos``), fast.ai 2018
(SGDR: cosine annealing per batch with warm restarts, ``cycle_len``,
``cycle_mult``, snapshot ensembles) and DLVU "Tools of the trade"
(warmup / cooldown).

Relation to optax
-----------------
* :func:`one_cycle` follows fastai 2 (``fit_one_cycle``): it ends at
  ``max_lr / div_final``. optax's ``cosine_onecycle_schedule`` (like PyTorch's
  ``OneCycleLR`` and fastai 1) ends at ``peak / (div_factor *
  final_div_factor)``, so the two agree with ``final_div_factor = div_final /
  div``. fastai also places the peak at the fractional position
  ``pct_start * total_steps``; optax truncates it to an int, so they agree
  exactly only when ``pct_start * total_steps`` is an integer.
* :func:`sgdr` equals ``optax.sgdr_schedule`` with ``init_value = peak_value =
  base_lr, warmup_steps = 0, end_value = 0`` and cycle lengths
  ``steps_per_epoch * cycle_len * cycle_mult**k``, but needs no list of cycles
  (``n_cycles=None`` restarts forever). fastai 0.7's ``CosAnneal`` additionally
  ran the first 1/20 of the first cycle at ``lr/100``: ``warmup_steps``.
* :func:`warmup_cosine` is ``optax.warmup_cosine_decay_schedule(0, peak_lr,
  warmup_steps, total_steps, end_lr)`` and :func:`warmup_linear` the join of two
  ``optax.linear_schedule``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

Numeric = jax.typing.ArrayLike


def _cos_interp(start: Numeric, end: Numeric, pct: jax.Array) -> jax.Array:
    """fastai ``sched_cos``: half a cosine from ``start`` (pct 0) to ``end`` (pct 1).

    Written as ``start*cos^2(pi*pct/2) + end*sin^2(pi*pct/2)`` (the same as
    fastai's ``start + (1 + cos(pi*(1-pct))) * (end-start)/2``) because the
    latter cancels catastrophically in float32 when ``end << start``: one-cycle's
    final ``max_lr/1e5`` would come out ~1% off.
    """
    half_angle = jnp.pi * pct / 2
    return start * jnp.cos(half_angle) ** 2 + end * jnp.sin(half_angle) ** 2


def _combined_cos(
    total_steps: int, pct_start: float, start: float, middle: float, end: float
) -> optax.Schedule:
    """fastai ``combined_cos``: cosine start->middle over ``pct_start``, then middle->end."""
    if total_steps <= 0 or not 0 < pct_start < 1:
        raise ValueError(f"need total_steps > 0 and 0 < pct_start < 1, got {total_steps}, {pct_start}")

    def schedule(step: Numeric) -> jax.Array:
        # fastai's position in training, clipped so steps past the end hold the end value.
        pos = jnp.clip(step / total_steps, 0.0, 1.0)
        warming = pos < pct_start
        return jnp.where(
            warming,
            _cos_interp(start, middle, pos / pct_start),
            _cos_interp(middle, end, (pos - pct_start) / (1 - pct_start)),
        )

    return schedule


def one_cycle(
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.25,
    div: float = 25.0,
    div_final: float = 1e5,
) -> optax.Schedule:
    r"""fastai's one-cycle learning rate (``fit_one_cycle`` defaults).

    Cosine from ``max_lr/div`` (step 0) up to ``max_lr`` (step ``pct_start *
    total_steps``), then cosine down to ``max_lr/div_final`` (step
    ``total_steps``, held afterwards). The low start is a warmup; the long
    annealing tail settles into a flat minimum.
    """
    return _combined_cos(total_steps, pct_start, max_lr / div, max_lr, max_lr / div_final)


def one_cycle_momentum(
    total_steps: int,
    pct_start: float = 0.25,
    moms: Sequence[float] = (0.95, 0.85, 0.95),
) -> optax.Schedule:
    r"""The momentum (``beta`` / ``b1``) schedule that goes with :func:`one_cycle`.

    Cosine ``moms[0] -> moms[1]`` while the lr rises (the first ``pct_start`` of
    ``total_steps``), then back to ``moms[2]``: momentum is lowest when the lr is
    highest, so the effective step (``lr / (1 - beta)`` for heavy-ball momentum)
    does not explode.
    """
    return _combined_cos(total_steps, pct_start, *moms)


def sgdr(
    base_lr: float,
    steps_per_epoch: int,
    cycle_len: int = 1,
    cycle_mult: int = 2,
    n_cycles: int | None = None,
    warmup_steps: int = 0,
) -> optax.Schedule:
    r"""SGDR: cosine annealing per batch with warm restarts (fast.ai 2018).

    Cycle ``k`` lasts ``steps_per_epoch * cycle_len * cycle_mult**k`` steps; in
    it the lr goes ``base_lr/2 * (1 + cos(pi * t_k / len_k))`` from ``base_lr``
    down towards 0 and restarts at ``base_lr``. ``cycle_len=1, cycle_mult=2``
    runs cycles of 1, 2, 4, ... epochs (3 cycles = 7 epochs). With ``n_cycles``
    the lr is 0 from the end of the last cycle on; with ``None`` it restarts
    forever. ``warmup_steps``: the lr is ``base_lr / 100`` for the first
    ``warmup_steps`` steps (the cosine's clock runs on), as fastai 0.7's
    ``CosAnneal`` does for its first ``nb / 20`` iterations of a ``fit``.
    """
    first_len = steps_per_epoch * cycle_len
    if first_len <= 0 or cycle_mult < 1:
        raise ValueError("need steps_per_epoch * cycle_len > 0 and cycle_mult >= 1")

    def cycle_start(k: jax.Array) -> jax.Array:
        # Sum of the geometric series of cycle lengths before cycle k.
        if cycle_mult == 1:
            return first_len * k
        return first_len * (cycle_mult**k - 1) / (cycle_mult - 1)

    def schedule(step: Numeric) -> jax.Array:
        t = jnp.asarray(step, jnp.float32)
        if cycle_mult == 1:
            k = jnp.floor(t / first_len)
        else:
            # Invert cycle_start in closed form (works for a traced step and no
            # cycle limit); the float log can be one cycle off at a restart, so
            # fix it with exact comparisons (integers below 2**24 are exact).
            k = jnp.floor(jnp.log1p(t * (cycle_mult - 1) / first_len) / jnp.log(cycle_mult))
            k = jnp.where(cycle_start(k) > t, k - 1, k)
            k = jnp.where(cycle_start(k + 1) <= t, k + 1, k)
        pct = (t - cycle_start(k)) / (first_len * cycle_mult**k)
        lr = base_lr / 2 * (1 + jnp.cos(jnp.pi * pct))
        if warmup_steps:
            lr = jnp.where(t < warmup_steps, base_lr / 100, lr)
        if n_cycles is None:
            return lr
        return jnp.where(t < cycle_start(n_cycles), lr, 0.0)

    return schedule


def sgdr_cycle_ends(
    steps_per_epoch: int, cycle_len: int = 1, cycle_mult: int = 2, n_cycles: int = 3
) -> list[int]:
    """Step counts at which the first ``n_cycles`` :func:`sgdr` cycles end, e.g. for snapshot ensembles
    (``steps_per_epoch``, ``cycle_len`` and ``cycle_mult`` as there).

    Entry ``k`` is the number of optimizer steps completed when cycle ``k``
    ends, i.e. the cycle ends after the batch with 0-based index ``entry - 1``
    and the lr restarts to ``base_lr`` at step ``entry``.
    ``sgdr_cycle_ends(n, 1, 2, 3) == [n, 3*n, 7*n]``.
    """
    ends, total = [], 0
    for k in range(n_cycles):
        total += steps_per_epoch * cycle_len * cycle_mult**k
        ends.append(total)
    return ends


def _warmup_then(
    peak_lr: float, warmup_steps: int, total_steps: int, end_lr: float, cosine: bool
) -> optax.Schedule:
    """Linear 0 -> peak over ``warmup_steps``, then cosine or linear peak -> end."""
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps}, {total_steps}")
    decay_steps = total_steps - warmup_steps

    def schedule(step: Numeric) -> jax.Array:
        # max(.., 1) only guards warmup_steps == 0, where the warmup branch is unused.
        warm = peak_lr * step / max(warmup_steps, 1)
        pct = jnp.clip((step - warmup_steps) / decay_steps, 0.0, 1.0)
        if cosine:
            decayed = _cos_interp(peak_lr, end_lr, pct)
        else:
            decayed = peak_lr + (end_lr - peak_lr) * pct
        return jnp.where(step < warmup_steps, warm, decayed)

    return schedule


def warmup_cosine(
    peak_lr: float, warmup_steps: int, total_steps: int, end_lr: float = 0.0
) -> optax.Schedule:
    r"""DLVU warmup + cosine cooldown.

    Linear from 0 to ``peak_lr`` over ``warmup_steps`` (lets Adam's second
    moment estimates settle before big steps), then cosine to ``end_lr`` at
    ``total_steps`` (held afterwards).
    """
    return _warmup_then(peak_lr, warmup_steps, total_steps, end_lr, cosine=True)


def warmup_linear(
    peak_lr: float, warmup_steps: int, total_steps: int, end_lr: float = 0.0
) -> optax.Schedule:
    r"""DLVU warmup + linear cooldown: 0 -> ``peak_lr`` -> ``end_lr``, piecewise linear (the peak at
    ``warmup_steps``, ``end_lr`` from ``total_steps`` on)."""
    return _warmup_then(peak_lr, warmup_steps, total_steps, end_lr, cosine=False)
