"""How sure is an accuracy? (DLVU "Tools of the trade": aim for ~10,000 test instances.)

A test accuracy ``p`` measured on ``n`` independent examples is a binomial proportion; its standard error is
``sqrt(p (1 - p) / n)`` and the normal-approximation 95% confidence interval is ``p ± 1.96 · SE``. With
``n = 100`` and ``p ≈ 0.5`` the half-width is ±0.098 (the lecture's "±0.1"), with ``n = 10,000`` ±0.0098:
only then do differences of a percentage point between models start to mean something.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Z_95", "accuracy_ci_halfwidth", "accuracy_ci", "format_accuracy", "accuracy"]

Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal (the lecture's 1.96)


def accuracy_ci_halfwidth(p: float, n: int, z: float = Z_95) -> float:
    """``z * sqrt(p (1 - p) / n)``: half-width of the normal-approximation confidence interval."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {p}")
    if n <= 0:
        raise ValueError(f"need a positive number of test examples, got n={n}")
    return z * math.sqrt(p * (1.0 - p) / n)


def accuracy_ci(p: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """``(p - h, p + h)`` with ``h = accuracy_ci_halfwidth(p, n, z)``, clipped to [0, 1]."""
    h = accuracy_ci_halfwidth(p, n, z)
    return max(0.0, p - h), min(1.0, p + h)


def format_accuracy(p: float, n: int, z: float = Z_95) -> str:
    """``'92.51% ± 0.52% (95% CI, n=10000)'``: how every accuracy in the experiments is reported."""
    return f"{100 * p:.2f}% ± {100 * accuracy_ci_halfwidth(p, n, z):.2f}% (95% CI, n={n})"


def accuracy(probs_or_logits: np.ndarray, y: np.ndarray) -> float:
    """Fraction of rows whose argmax equals the label."""
    return float((np.asarray(probs_or_logits).argmax(-1) == np.asarray(y)).mean())
