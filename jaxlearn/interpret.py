"""Looking at what a trained classifier does: fastai's ``learn.summary()``, ``learn.show_results()`` and
``ClassificationInterpretation`` (confusion matrix, most confused classes, top losses).

Every prediction comes from the Learner's compiled predict (``learn.predict``); the rest is NumPy on the host.
The Learner's ``summary`` and ``show_results`` methods call the functions here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn.callback import LearnerLike
from jaxlearn.data import ArrayDataset
from jaxlearn.losses import per_example_loss
from jaxlearn.train_flag import train_kwargs

if TYPE_CHECKING:  # matplotlib is imported when something is drawn
    from matplotlib.figure import Figure

__all__ = ["ClassificationInterpretation", "summary", "show_results"]


def _sample_inputs(learn: LearnerLike, n: int = 2):
    """``n`` training inputs as the model sees them (the dataset's transform, then the evaluation transforms)."""
    ds = learn.dls.train
    x = ds.transform(jax.tree.map(lambda a: a[:n], ds.x))
    return learn.batch_transform()(x, False, jax.random.key(0))


def summary(learn: LearnerLike, print_fn: Callable[[str], Any] | None = print) -> str:
    """fastai's ``learn.summary()``: each layer's output shape and parameter count (``flax.linen.tabulate``
    on two training examples of the Learner ``learn``; flax's total also counts BatchNorm statistics), then the
    number of trainable parameters. Printed with ``print_fn`` (``None``: not printed) and returned."""
    kwargs = train_kwargs(learn.state.train_flag, False)
    table = nn.tabulate(learn.model, {"params": jax.random.key(0), "dropout": jax.random.key(0)},
                        console_kwargs={"width": 120, "color_system": None})(_sample_inputs(learn), **kwargs)
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(learn.state.params))
    text = f"{table}\nTrainable parameters: {n_params:,}\n"
    if print_fn is not None:
        print_fn(text)
    return text


def _labels(learn: LearnerLike, n_classes: int) -> list[str]:
    return list(learn.dls.info.get("classes") or [str(i) for i in range(n_classes)])


def show_results(learn: LearnerLike, n: int = 9, ds: ArrayDataset | None = None,
                 path: str | Path | None = None) -> Figure:
    """fastai's ``learn.show_results()``: the first ``n`` images of ``ds`` (default: the validation set) titled
    ``predicted / true`` (``dls.info['classes']`` names when present; green when right, red when wrong); the
    figure, also saved to ``path`` when given."""
    ds = ds or learn.dls.valid
    x, y = np.asarray(ds.x[:n]), np.asarray(ds.y[:n])
    out = learn.predict(x, raw=True)
    pred, labels = out.argmax(-1), _labels(learn, out.shape[-1])
    from jaxlearn.callbacks.plots import show_images
    return show_images(x, [f"{labels[p]} / {labels[t]}" for p, t in zip(pred, y)],
                       ["g" if p == t else "r" for p, t in zip(pred, y)], title="predicted / true", path=path)


@dataclass
class ClassificationInterpretation:
    """fastai's ``ClassificationInterpretation``: a classifier's predictions on a dataset, kept on the host.

    ``x`` (the inputs), ``probs`` (softmax of the model's outputs), ``targets``, ``decoded`` (argmax), ``losses``
    (the Learner's per-example loss); ``classes`` names the labels. Made by :meth:`from_learner`.
    """
    x: np.ndarray
    targets: np.ndarray
    probs: np.ndarray
    losses: np.ndarray
    classes: list[str]

    @classmethod
    def from_learner(cls, learn: LearnerLike, ds: ArrayDataset | None = None) -> "ClassificationInterpretation":
        """Predict ``ds`` (default: the validation set) with ``learn.predict`` and keep what interpretation needs."""
        ds = ds or learn.dls.valid
        x, y = jax.device_get((ds.x, ds.y))
        logits = learn.predict(x, raw=True)
        losses = per_example_loss(learn.loss_fn, jnp.asarray(logits), jnp.asarray(y))
        return cls(x, np.asarray(y), np.asarray(jax.nn.softmax(logits.astype(np.float32), -1)),
                   np.asarray(losses), _labels(learn, logits.shape[-1]))

    @property
    def decoded(self) -> np.ndarray:
        """The predicted class of each example (the argmax of ``probs``)."""
        return self.probs.argmax(-1)

    def confusion_matrix(self) -> np.ndarray:
        """``cm[actual, predicted]`` counts; it sums to the number of examples."""
        k = self.probs.shape[-1]
        return np.bincount(self.targets * k + self.decoded, minlength=k * k).reshape(k, k)

    def most_confused(self, min_val: int = 1) -> list[tuple[str, str, int]]:
        """``(actual, predicted, count)`` for the off-diagonal cells with at least ``min_val``, most first."""
        cm = self.confusion_matrix()
        np.fill_diagonal(cm, 0)
        cells = [(self.classes[a], self.classes[p], int(cm[a, p])) for a, p in zip(*np.nonzero(cm >= min_val))]
        return sorted(cells, key=lambda c: -c[2])

    def top_losses(self, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` largest losses (all when ``None``), largest first, and the examples' indices."""
        idx = np.argsort(-self.losses, kind="stable")[:k]
        return self.losses[idx], idx

    def plot_confusion_matrix(self, normalize: bool = False, path: str | Path | None = None) -> Figure:
        """The confusion matrix as an image with its counts (or row fractions with ``normalize``); the figure,
        also saved to ``path`` when given."""
        import matplotlib.pyplot as plt
        from jaxlearn.callbacks.plots import save
        cm = self.confusion_matrix().astype(np.float64)
        if normalize:
            cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        fig, ax = plt.subplots(figsize=(0.6 * len(cm) + 2, 0.6 * len(cm) + 1.5))
        ax.imshow(cm, cmap="Blues")
        for (a, p), v in np.ndenumerate(cm):
            ax.text(p, a, f"{v:.2f}" if normalize else int(v), ha="center", va="center", fontsize=7,
                    color="white" if v > cm.max() / 2 else "black")
        ticks = range(len(cm))
        ax.set_xticks(ticks, self.classes, rotation=90)
        ax.set_yticks(ticks, self.classes)
        ax.set(xlabel="predicted", ylabel="actual", title="confusion matrix")
        return save(fig, path)

    def plot_top_losses(self, k: int = 9, path: str | Path | None = None) -> Figure:
        """The ``k`` worst-predicted images titled ``predicted / actual / loss / probability of the
        prediction``, as fastai's ``plot_top_losses``; the figure, also saved to ``path`` when given."""
        from jaxlearn.callbacks.plots import show_images
        losses, idx = self.top_losses(k)
        titles = [f"{self.classes[self.decoded[i]]} / {self.classes[self.targets[i]]}\n"
                  f"{loss:.2f} / {self.probs[i].max():.2f}" for loss, i in zip(losses, idx)]
        return show_images(self.x[idx], titles, title="predicted / actual / loss / probability", path=path)
