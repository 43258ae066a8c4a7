"""learn.export / load_learner: a fresh Python process predicts bitwise as the Learner did, without data."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jaxlearn.export import load_learner

from _shortcut_learner import CLASSES, tiny_cnn_learner
from _tiny import tiny_arrays

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A trained BatchNorm CNN (normalization callback, lambda-free pipeline) exported, and its predictions."""
    learn = tiny_cnn_learner()
    learn.fit(2)
    path = learn.export(tmp_path_factory.mktemp("export") / "model")
    x, _ = tiny_arrays(40, seed=7)
    return dict(path=path, x=x, preds=learn.predict(x, raw=True), single=learn.predict(x[3], raw=True))


def test_a_fresh_process_predicts_bitwise_without_the_dataset(exported, tmp_path):
    np.save(tmp_path / "x.npy", exported["x"])
    script = textwrap.dedent(f"""
        import numpy as np
        from jaxlearn.export import load_learner
        learn = load_learner({str(exported['path'])!r})
        x = np.load({str(tmp_path / 'x.npy')!r})
        np.save({str(tmp_path / 'preds.npy')!r}, learn.predict(x, raw=True))
        np.save({str(tmp_path / 'single.npy')!r}, learn.predict(x[3], raw=True))
        assert learn.classes == {CLASSES!r}
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=120)
    assert np.array_equal(np.load(tmp_path / "preds.npy"), exported["preds"])
    single = np.load(tmp_path / "single.npy")
    assert single.shape == (3,) and np.array_equal(single, exported["single"])


def test_the_loaded_learner_checks_inputs_like_the_learner(exported):
    learn = load_learner(exported["path"])
    with pytest.raises(ValueError, match="shape"):
        learn.predict(np.zeros((2, 5, 5, 1), np.uint8))
    assert (exported["path"] / "export.json").read_text().count('"uint8"') == 1


def test_a_lambda_that_inference_needs_is_refused_by_name(tmp_path):
    from jaxlearn.callbacks import BatchTransformCB
    learn = tiny_cnn_learner()
    learn.callbacks.append(BatchTransformCB(lambda x: x * 2))
    with pytest.raises(ValueError, match="lambda"):
        learn.export(tmp_path / "model")
