"""ClassificationInterpretation: confusion matrix, top losses and most confused, from learn.predict."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.interpret import ClassificationInterpretation
from jaxlearn.losses import cross_entropy

from _shortcut_learner import CLASSES, tiny_cnn_learner


@pytest.fixture(scope="module")
def interp():
    learn = tiny_cnn_learner()
    learn.fit(2)
    return learn, ClassificationInterpretation.from_learner(learn)


def test_confusion_matrix_counts_every_validation_example(interp):
    learn, it = interp
    cm = it.confusion_matrix()
    assert cm.shape == (3, 3) and cm.sum() == len(learn.dls.valid)
    preds = learn.predict(np.asarray(learn.dls.valid.x), raw=True).argmax(-1)
    assert np.trace(cm) == (preds == np.asarray(learn.dls.valid.y)).sum()
    assert sum(c for *_, c in it.most_confused()) == cm.sum() - np.trace(cm)
    assert all(a in CLASSES and p in CLASSES and a != p for a, p, _ in it.most_confused())


def test_top_losses_are_sorted_per_example_cross_entropies(interp):
    learn, it = interp
    losses, idx = it.top_losses(10)
    assert np.all(np.diff(losses) <= 0) and len(idx) == 10
    logits = learn.predict(np.asarray(learn.dls.valid.x), raw=True)
    expected = np.asarray(cross_entropy(jnp.asarray(logits), learn.dls.valid.y))
    np.testing.assert_allclose(losses, expected[idx], rtol=1e-6)
    assert losses[0] == pytest.approx(expected.max())


def test_plots(interp, tmp_path):
    _, it = interp
    fig = it.plot_top_losses(4, path=tmp_path / "top.png")
    assert sum(1 for ax in fig.axes if ax.get_title()) == 4
    it.plot_confusion_matrix(path=tmp_path / "cm.png")
    assert (tmp_path / "top.png").stat().st_size > 0 and (tmp_path / "cm.png").stat().st_size > 0
