r"""The lessons' optimizers (optax's ``alias.py``): each a chain of :mod:`jaxlearn.optim.transforms` in one
fixed order, ``direction -> decay_weights(wd) -> scale_by_lr(lr)``, every hyperparameter a plain numeric
keyword so that ``optax.inject_hyperparams`` can wrap any of them."""

from __future__ import annotations

import optax

from jaxlearn.optim.transforms import (Numeric, decay_weights, scale_by_adam, scale_by_lr, scale_by_momentum,
                                       scale_by_rms)


def sgd(learning_rate: optax.ScalarOrSchedule, weight_decay: Numeric = 0.0) -> optax.GradientTransformation:
    r"""miniai ``SGD``: ``p <- p*(1 - lr*wd) - lr*g``."""
    return optax.chain(decay_weights(weight_decay), scale_by_lr(learning_rate))


def momentum(
    learning_rate: optax.ScalarOrSchedule,
    beta: Numeric = 0.9,
    weight_decay: Numeric = 0.0,
    lerp: bool = True,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    r"""miniai ``Momentum`` (``lerp=True``) or heavy-ball / Nesterov SGD.

    ``p <- p*(1 - lr*wd) - lr*m`` with ``m`` from :func:`scale_by_momentum`.
    ``momentum(lr, b, lerp=False, nesterov=n)`` is ``optax.sgd(lr, b, n)``;
    ``momentum(lr, b)`` is ``optax.sgd(lr*(1-b), b)``.
    """
    return optax.chain(
        scale_by_momentum(beta, lerp=lerp, nesterov=nesterov),
        decay_weights(weight_decay),
        scale_by_lr(learning_rate),
    )


def rmsprop(
    learning_rate: optax.ScalarOrSchedule,
    decay: Numeric = 0.99,
    eps: Numeric = 1e-5,
    weight_decay: Numeric = 0.0,
    init_with_first_grad: bool = True,
) -> optax.GradientTransformation:
    r"""miniai ``RMSProp``: ``p <- p*(1 - lr*wd) - lr * g/(sqrt(s) + eps)``."""
    return optax.chain(
        scale_by_rms(decay, eps, init_with_first_grad=init_with_first_grad),
        decay_weights(weight_decay),
        scale_by_lr(learning_rate),
    )


def adam(
    learning_rate: optax.ScalarOrSchedule,
    b1: Numeric = 0.9,
    b2: Numeric = 0.99,
    eps: Numeric = 1e-5,
    weight_decay: Numeric = 0.0,
    eps_in_sqrt: bool = True,
) -> optax.GradientTransformation:
    r"""miniai ``Adam`` with decoupled weight decay (i.e. AdamW when ``wd > 0``).

    ``p <- p*(1 - lr*wd) - lr * m_hat/sqrt(v_hat + eps)``; see
    :func:`scale_by_adam`. Matches ``optax.adamw(lr, b1, b2, eps=0,
    eps_root=eps, weight_decay=wd)`` (or ``optax.adamw(lr, b1, b2, eps)`` with
    ``eps_in_sqrt=False``).
    """
    return optax.chain(
        scale_by_adam(b1, b2, eps, eps_in_sqrt=eps_in_sqrt),
        decay_weights(weight_decay),
        scale_by_lr(learning_rate),
    )


def adamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: Numeric = 0.9,
    b2: Numeric = 0.99,
    eps: Numeric = 1e-5,
    weight_decay: Numeric = 1e-2,
    eps_in_sqrt: bool = True,
) -> optax.GradientTransformation:
    r""":func:`adam` with fastai's default decoupled weight decay ``wd=0.01``."""
    return adam(learning_rate, b1, b2, eps, weight_decay, eps_in_sqrt=eps_in_sqrt)
