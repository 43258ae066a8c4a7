import json
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
try:
    import why_it_works as wiw
finally:
    sys.path.pop(0)


def test_magnitude_mask_keeps_the_largest_weights():
    params = {"a": {"kernel": jnp.array([[0.1, -3.0], [2.0, 0.01]]), "bias": jnp.array([0.0, 0.0])},
              "b": {"kernel": jnp.array([[-0.5], [4.0]])}}
    mask = wiw.magnitude_mask(params, keep=0.5)  # 3 of the 6 kernel weights: |w| in {4, 3, 2}
    np.testing.assert_array_equal(mask["a"]["kernel"], [[0, 1], [1, 0]])
    np.testing.assert_array_equal(mask["b"]["kernel"], [[0], [1]])
    np.testing.assert_array_equal(mask["a"]["bias"], [1, 1])  # biases are never pruned


def test_masked_optimizer_keeps_pruned_weights_at_zero():
    params = {"w": jnp.array([1.0, 0.0, 2.0])}
    mask = {"w": np.array([1.0, 0.0, 1.0], np.float32)}
    tx = wiw.masked(optax.adam(0.1), mask)
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update({"w": jnp.ones(3)}, state, params)
        params = optax.apply_updates(params, updates)
    assert float(params["w"][1]) == 0.0 and float(params["w"][0]) < 1.0


def test_quick_run_writes_figures_and_tables(tmp_path):
    r = wiw.main(["--quick", "--out", str(tmp_path)])
    for name in ("memorization", "ci", "search", "ladder", "pruning"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    readme = (tmp_path / "README.md").read_text()
    assert "± " in readme and "| random |" in readme and "lottery" in readme
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [row["step"] for row in saved["ladder"]["rows"]] == ["linear", "conv", "conv_relu", "conv_relu_pool"]
    assert saved["search"]["random"]["distinct_lrs"] > saved["search"]["grid"]["distinct_lrs"]
    assert r["pruning"]["curve"][0]["keep"] == 1.0
