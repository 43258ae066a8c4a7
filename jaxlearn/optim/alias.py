r"""The lessons' optimizers (optax's ``alias.py``): each a chain of :mod:`jaxlearn.optim.transforms` in one
fixed order, ``direction -> decay_weights(wd) -> scale_by_lr(lr)``, every hyperparameter a plain numeric
keyword so that ``optax.inject_hyperparams`` can wrap any of them."""

from __future__ import annotations

import optax

from jaxlearn.optim.transforms import (Numeric, decay_weights, scale_by_adam, scale_by_lr, scale_by_momentum,
                                       scale_by_rms)


def sgd(learning_rate: optax.ScalarOrSchedule, weight_decay: Numeric = 0.0) -> optax.GradientTransformation:
    r"""miniai ``SGD``: ``p <- p*(1 - lr*wd) - lr*g``.

    Args:
        learning_rate: ``lr``: a number, an optax schedule ``step -> lr``, or an injected hyperparameter
            (``optax.inject_hyperparams(sgd)(learning_rate=...)``, as the Learner does).
        weight_decay: ``wd``, decoupled (:func:`~jaxlearn.optim.transforms.decay_weights`); 0: none.
    """
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

    Args:
        learning_rate: ``lr`` (a number, a schedule or an injected hyperparameter, as for :func:`sgd`).
        beta: the momentum ``b``: how much of the previous ``m`` each step keeps.
        weight_decay: ``wd``, decoupled; 0: none.
        lerp: miniai's moving average ``m <- b*m + (1-b)*g``; ``False``: the heavy ball ``m <- b*m + g``.
        nesterov: step along the look-ahead direction (:func:`scale_by_momentum`).
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
    r"""miniai ``RMSProp``: ``p <- p*(1 - lr*wd) - lr * g/(sqrt(s) + eps)``.

    Args:
        learning_rate: ``lr`` (a number, a schedule or an injected hyperparameter, as for :func:`sgd`).
        decay: how much of the mean square ``s`` each step keeps: ``s <- decay*s + (1-decay)*g**2``.
        eps: added to ``sqrt(s)`` (outside the sqrt, as miniai), against a division by ~0.
        weight_decay: ``wd``, decoupled; 0: none.
        init_with_first_grad: seed ``s`` with the first ``g**2`` (miniai) rather than 0, whose first step is
            ``1/sqrt(1-decay)`` times too large (:func:`scale_by_rms`).
    """
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

    Args:
        learning_rate: ``lr`` (a number, a schedule or an injected hyperparameter, as for :func:`sgd`).
        b1: decay of the gradients' average ``m`` (the momentum).
        b2: decay of the squared gradients' average ``v`` (miniai 0.99; the paper and optax 0.999).
        eps: against a division by ~0 (miniai 1e-5; the paper 1e-8).
        weight_decay: ``wd``, decoupled (AdamW); 0: none.
        eps_in_sqrt: ``eps`` inside the sqrt, as the lesson's code; ``False``: ``m_hat / (sqrt(v_hat) + eps)``.
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
    r""":func:`adam` with fastai's default decoupled weight decay ``wd=0.01``: ``learning_rate``, ``b1``,
    ``b2``, ``eps``, ``weight_decay`` and ``eps_in_sqrt`` as there."""
    return adam(learning_rate, b1, b2, eps, weight_decay, eps_in_sqrt=eps_in_sqrt)
