"""The compiled calls a Learner launches, built once for the callbacks of a fit and kept in a cache.

A callback puts things into the trace by having them (see :class:`jaxlearn.callback.Callback`): ``in_step``
hooks and ``capture`` filters, ``batch_transform``, ``hyper_schedules``. Its ``signature`` names what it puts
in, so callbacks with equal signatures share one compilation, and a fit with the same callbacks compiles
nothing new.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from jaxlearn.callback import Callback
from jaxlearn.data import DataLoaders
from jaxlearn.metrics import AnyMetric
from jaxlearn.step import (StepContext, Transform, compose_transforms, make_eval_call, make_eval_step,
                           make_predict, make_train_call, make_train_step)
from jaxlearn.trees import flatten_intermediates


def callbacks_transform(callbacks: Sequence[Callback]) -> Transform:
    """The ``batch_transform`` of every one of ``callbacks`` that has one, in the given order, as one transform."""
    return compose_transforms([cb.batch_transform for cb in callbacks if hasattr(cb, "batch_transform")])


def compiled_calls(cache: dict, callbacks: Sequence[Callback], total_steps: int, loss_fn: Callable,
                   metrics: Sequence[AnyMetric], dls: DataLoaders, constrain: Callable, jit_kwargs: Mapping,
                   compute_dtype: Any = None) -> tuple:
    """The train, eval and predict calls for ``callbacks`` (sorted by order), built once and kept in ``cache``:
    the step's ``loss_fn`` and ``metrics``, the datasets' input transforms from ``dls``, ``constrain`` laying each
    batch out on the devices and ``jit_kwargs`` for ``jax.jit`` (:func:`jaxlearn.step.make_train_call`).

    What a callback puts into the trace — ``in_step`` hooks and ``capture`` filters, ``batch_transform``,
    ``hyper_schedules`` (with the fit's ``total_steps``) — is named by its ``signature``: calls are shared by
    callbacks with equal signatures. The eval and predict calls depend on the transforms only. Returns
    ``(train_call, eval_call, predict, hooked)``, ``hooked`` mapping the train call's output names to the
    callbacks whose ``in_step`` made them. ``compute_dtype``: see :func:`~jaxlearn.step.make_train_step` (one per
    cache).
    """
    in_step = [cb for cb in callbacks if hasattr(cb, "in_step") or cb.capture is not None]
    tfms = tuple(cb.signature for cb in callbacks if hasattr(cb, "batch_transform"))
    scheds = [cb for cb in callbacks if hasattr(cb, "hyper_schedules")]
    key = (tuple(cb.signature for cb in in_step), tfms, tuple(cb.signature for cb in scheds),
           total_steps if scheds else None)
    transform = callbacks_transform(callbacks)
    if total_steps and key not in cache:  # total_steps 0: evaluation or prediction only, no train call
        filters = [cb.capture for cb in in_step if cb.capture is not None]
        capture = (lambda mdl, method: any(f(mdl, method) for f in filters)) if filters else None
        own = len(filters) > 1  # several filters capture at once: each hook sees only what its own selected
        hooks = {f"cb{i}": _own_captures(cb) if own and cb.capture is not None else cb.in_step
                 for i, cb in enumerate(in_step) if hasattr(cb, "in_step")}
        train_step = make_train_step(loss_fn, metrics, capture, hooks, perturb=any(cb.perturb for cb in in_step),
                                     compute_dtype=compute_dtype)
        schedules = {k: v for cb in scheds for k, v in cb.hyper_schedules(total_steps).items()}
        cache[key] = make_train_call(train_step, dls.train.transform, transform, schedules, constrain, jit_kwargs)
    if tfms not in cache:
        cache[tfms] = (make_eval_call(make_eval_step(loss_fn, metrics, compute_dtype), dls.valid.transform,
                                      transform, constrain, jit_kwargs),
                       make_predict(dls.valid.transform, transform, compute_dtype))
    hooked = {f"cb{i}": cb for i, cb in enumerate(in_step) if hasattr(cb, "in_step")}
    return cache.get(key), *cache[tfms], hooked


def _own_captures(cb: Callback) -> Callable[[StepContext], Any]:
    """``cb.in_step`` seeing only the intermediates ``cb.capture`` selects (the step captures the union of every
    callback's filter). Which paths those are is read from the model's shapes when the step is traced."""
    def in_step(ctx: StepContext) -> Any:
        def captured(variables, x):
            return ctx.state.apply(variables, x, True, capture_intermediates=cb.capture,
                                   rngs={"dropout": ctx.state.rng},
                                   mutable=["intermediates", *ctx.state.model_state])[1].get("intermediates", {})
        names = flatten_intermediates(jax.eval_shape(captured, ctx.state.variables(), ctx.x))
        return cb.in_step(dataclasses.replace(ctx, intermediates={k: v for k, v in ctx.intermediates.items()
                                                                  if k in names}))
    return in_step


def n_traces(cache: dict) -> int:
    """How many times the train and eval calls in a :func:`compiled_calls` cache were traced."""
    return sum((c if callable(c) else c[0])._cache_size() for c in cache.values())

