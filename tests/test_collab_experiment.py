"""experiments/collab.py --quick: every row of results.json is there, strict JSON, and one epoch of training
already predicts the validation ratings better than the untrained model and (the dot-product models) than the
mean rating does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("JAXLEARN_MOVIELENS_DIR", "/work/shared/data/movielens"))
ROW_KEYS = {"dataset", "model", "valid_mse", "lesson_mse", "target", "settings", "initial_mse",
            "mean_predictor_mse", "seconds"}
MODELS = {("ml-latest-small", "EmbeddingDot"), ("ml-latest-small", "EmbeddingDotBias"),
          ("ml-latest-small", "EmbeddingNet"), ("ml-100k", "EmbeddingDot"), ("ml-100k", "EmbeddingDotBias"),
          ("ml-100k", "EmbeddingNet"), ("ml-100k", "TabularModel")}

pytestmark = pytest.mark.skipif(not (DATA / "ml-100k").is_dir() or not (DATA / "ml-latest-small").is_dir(),
                                reason="MovieLens not found: set JAXLEARN_MOVIELENS_DIR")


def strict_json(path: Path):
    def refuse(name):
        raise ValueError(f"{path} is not strict JSON: {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("collab")
    env = {**os.environ, "MPLBACKEND": "Agg", "JAXLEARN_MOVIELENS_DIR": str(DATA)}
    proc = subprocess.run([sys.executable, "experiments/collab.py", "--quick", "--no-progress", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_quick_run_writes_every_row_as_strict_json(quick_run):
    rows = strict_json(quick_run / "results.json")
    assert isinstance(rows, list)
    assert all(ROW_KEYS <= set(row) for row in rows)
    assert {(row["dataset"], row["model"]) for row in rows} == MODELS
    assert all(row["settings"]["epochs"] == 1 and row["settings"]["bs"] == 1024 for row in rows)
    wd_rows = strict_json(quick_run / "wd_vs_l2.json")
    assert {row["regularization"] for row in wd_rows} == {"l2", "decoupled"}
    for name in ("README.md", "lr_find.png", "movie_bias.png", "movie_pca.png"):
        assert (quick_run / name).stat().st_size > 0, name


def test_quick_training_beats_the_untrained_model_and_the_mean_rating(quick_run):
    for row in strict_json(quick_run / "results.json"):
        assert row["valid_mse"] < row["initial_mse"], row
        if row["model"] in ("EmbeddingDot", "EmbeddingDotBias"):  # EmbeddingDot too, started at the mean rating
            assert row["valid_mse"] < row["mean_predictor_mse"], row


def test_the_lessons_sgd_is_torchs_sgd_with_weight_decay():
    # torch.optim.SGD(lr, momentum=0.9, weight_decay=wd): buf = 0.9·buf + (g + wd·p); p -= lr·buf
    import importlib.util
    spec = importlib.util.spec_from_file_location("experiment_collab_sgd", ROOT / "experiments" / "collab.py")
    collab = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = collab
    spec.loader.exec_module(collab)
    import numpy as np
    import optax
    params = {"w": np.linspace(-1, 1, 6, dtype=np.float32)}
    ours, theirs = collab.sgd_l2(0.1, l2=0.01), optax.chain(optax.add_decayed_weights(0.01), optax.sgd(0.1, 0.9))
    states, p = [ours.init(params), theirs.init(params)], [params, params]
    for step in range(4):
        grads = {"w": np.cos(np.arange(6, dtype=np.float32) + step)}
        for k, tx in enumerate((ours, theirs)):
            updates, states[k] = tx.update(grads, states[k], p[k])
            p[k] = optax.apply_updates(p[k], updates)
    np.testing.assert_allclose(p[0]["w"], p[1]["w"], rtol=1e-6)
