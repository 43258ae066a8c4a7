r"""Optimizers as optax gradient transformations, and their schedules.

Sources: fast.ai 2022 lesson 17 ("miniai" ``SGD``/``Momentum``/``RMSProp``/``Adam``
classes), DLVU "Tools of the trade" (heavy-ball momentum, Nesterov, Adam, L2 vs
weight decay, clipping) and fast.ai 2018 (AdamW, differential learning rates,
freezing layer groups).

Every building block is a small ``optax.GradientTransformation``
(:mod:`~jaxlearn.optim.transforms`); the aliases (:mod:`~jaxlearn.optim.alias`:
:func:`sgd`, :func:`momentum`, :func:`rmsprop`, :func:`adam`, :func:`adamw`)
chain them in one fixed order::

    direction (momentum / rms / adam)  ->  decay_weights(wd)  ->  scale_by_lr(lr)

so the final update is ``-lr * (direction + wd * p)`` and ``optax.apply_updates``
gives ``p <- p * (1 - lr*wd) - lr * direction``: exactly miniai's
``reg_step`` (``p *= 1 - lr*wd``) followed by ``opt_step`` (``p -= lr*step``).
Keeping the learning rate in ONE transform at the very end has two consequences
the rest of the package relies on:

* the lr can be a float, an optax schedule, or an injected hyperparameter
  (``optax.inject_hyperparams(adam)(learning_rate=...)``; the Learner changes it
  with ``optax.tree_utils.tree_set(opt_state, learning_rate=x)``, or with
  :func:`set_hyperparams`, which also keeps the stored float32 dtype so that a
  Python float does not cost an extra jit trace) without any other transform
  needing to know;
* ``lr == 0`` makes the whole update ``-0 * (...)``, so the parameters stay
  bitwise unchanged. :func:`differential` freezes layer groups that way, by
  editing the optimizer *state* only (no recompilation).

All aliases keep every hyperparameter a plain numeric keyword (flags are
``bool``, which ``inject_hyperparams`` treats as static), so each of them can be
wrapped by ``optax.inject_hyperparams``.  Because injected hyperparameters are
traced arrays, no transform branches in Python on a numeric value (e.g.
``weight_decay=0.`` still adds ``0 * p``, which is exact).

Where miniai differs from optax
-------------------------------
* RMSProp: miniai seeds the square average with the first ``g**2`` (``p.sqr_avg
  = p.grad**2``), optax with a constant ``initial_scale`` (0 by default, which
  makes the first step ``g / sqrt((1-decay) g**2)`` = 10x the gradient's sign
  for decay 0.99 -- the "huge first step" pitfall). The two agree exactly when
  optax's square average is set to ``g1**2`` after ``init`` (or, for a scalar
  problem, ``initial_scale=g1**2``). miniai also puts ``eps`` outside the sqrt
  (``g / (sqrt(s) + eps)``), optax inside by default: use
  ``optax.rmsprop(eps_in_sqrt=False)``. Defaults: miniai ``decay=0.99,
  eps=1e-5``; optax ``0.9, 1e-8``.
* Adam: miniai's defaults are ``b2=0.99, eps=1e-5``; optax (and the paper /
  PyTorch) use ``b2=0.999, eps=1e-8``. The lesson's course code puts ``eps``
  inside the sqrt (``m_hat / sqrt(v_hat + eps)``, our default
  ``eps_in_sqrt=True`` = ``optax.adam(eps=0, eps_root=eps)``); with
  ``eps_in_sqrt=False`` it is optax's ``m_hat / (sqrt(v_hat) + eps)``.
* Momentum: miniai lerps (``avg = b*avg + (1-b)*g``); optax.sgd / torch use the
  heavy-ball sum (``m = b*m + g``), i.e. the same trajectory with the lr scaled
  by ``1/(1-b)``. Both are available (``lerp=``).
* Weight decay: every alias here decays *decoupled* (miniai ``SGD.reg_step``,
  AdamW), so ``adam(weight_decay=wd)`` is ``optax.adamw``, not Adam + L2. For
  L2 put :func:`add_l2` in front of the chain.


Modules: :mod:`~jaxlearn.optim.transforms` (the building blocks), :mod:`~jaxlearn.optim.alias` (the
lessons' optimizers), :mod:`~jaxlearn.optim.groups` (differential lrs, freezing),
:mod:`~jaxlearn.optim.hyperparams` (injected hyperparameters, what the Learner needs of an optimizer),
:mod:`~jaxlearn.optim.schedules` (one-cycle, SGDR, warmup), :mod:`~jaxlearn.optim.loss_scaling` (float16).
None of them imports the Learner.
"""

from jaxlearn.optim.alias import adam, adamw, momentum, rmsprop, sgd
from jaxlearn.optim.groups import (differential, freeze, freeze_to, group_labels, layer_groups, lr_range, param_groups,
                                   set_lr_mults, trainable_flags, unfreeze)
from jaxlearn.optim.hyperparams import (DEFAULT_LR, MissingHyperparameter, get_hyperparam, hyperparam_names,
                                        make_optimizer, set_hyperparams)
from jaxlearn.optim.loss_scaling import LossScaleState, dynamic_loss_scale, loss_scale, mixed_precision
from jaxlearn.optim.schedules import (one_cycle, one_cycle_momentum, sgdr, sgdr_cycle_ends, warmup_cosine,
                                      warmup_linear)
from jaxlearn.optim.transforms import (ScaleByAdamState, ScaleByLrState, ScaleByMomentumState, ScaleByRmsState,
                                       add_l2, clip_elementwise, clip_global_norm, decay_weights, scale_by_adam,
                                       scale_by_lr, scale_by_momentum, scale_by_rms)

__all__ = ["adam", "adamw", "momentum", "rmsprop", "sgd", "differential", "freeze", "freeze_to", "group_labels",
           "layer_groups", "lr_range", "param_groups", "set_lr_mults", "trainable_flags", "unfreeze", "DEFAULT_LR",
           "MissingHyperparameter", "get_hyperparam", "hyperparam_names", "make_optimizer", "set_hyperparams",
           "LossScaleState", "dynamic_loss_scale", "loss_scale", "mixed_precision", "one_cycle", "one_cycle_momentum",
           "sgdr", "sgdr_cycle_ends", "warmup_cosine", "warmup_linear", "ScaleByAdamState", "ScaleByLrState",
           "ScaleByMomentumState", "ScaleByRmsState", "add_l2", "clip_elementwise", "clip_global_norm",
           "decay_weights", "scale_by_adam", "scale_by_lr", "scale_by_momentum", "scale_by_rms"]
