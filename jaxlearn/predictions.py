"""What ``predict`` returns for a classifier: fastai's decoded label, class index and probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np


class Prediction(NamedTuple):
    """A classifier's prediction, unpacked as fastai's ``label, index, probs = learn.predict(x)``.

    For one example: the class name (``dls.info['classes']``; the index when there are none), the index and
    the (C,) probabilities; for a batch, an array of each (a sequence model's per step: (N, T) and (N, T, C)).
    """
    label: Any
    index: Any
    probs: np.ndarray


def softmax(logits: np.ndarray) -> np.ndarray:
    """``softmax`` over the last axis of ``logits`` on the host (computed in float64, returned as float32)."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(-1, keepdims=True))
    return (z / z.sum(-1, keepdims=True)).astype(np.float32)


def decode(outputs: np.ndarray, classes: Sequence[str] | None, single: bool) -> Prediction:
    """The :class:`Prediction` of a classifier's raw ``outputs`` (logits, batch axis first unless ``single``: one
    example), labelled with ``classes`` (the names by index; ``None``: the index is the label)."""
    probs = softmax(outputs)
    index = probs.argmax(-1)
    label = np.asarray(list(classes), dtype=object)[index] if classes else index
    if single and np.ndim(index) == 0:
        return Prediction(label if not classes else str(label), int(index), probs)
    return Prediction(label, index, probs)
