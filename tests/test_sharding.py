"""Data parallel on a 'data' mesh: 4 CPU devices (in a subprocess: the device count is fixed at jax import)."""

import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

from jaxlearn.data import DataLoaders
from jaxlearn.learner import Learner

WORKER = Path(__file__).with_name("_two_process_worker.py")


def run_worker(tmp_path, *args, timeout=240):
    out = tmp_path / "result.npz"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(WORKER), "--out", str(out), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, f"worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return dict(np.load(out))


def split(result, run):
    return {k.split("|", 1)[1]: v for k, v in result.items() if k.startswith(run + "|")}


def test_four_devices_equal_one_device(tmp_path):
    """20 steps with the batch sharded over 4 devices equal the one-device run: loss, params, BatchNorm stats.

    BatchNorm's mean / var over a quarter of the batch would differ from the full batch's by far more than
    1e-5, so equal running statistics show that XLA made them global over the whole (sharded) batch.
    """
    r = run_worker(tmp_path, "--devices", "4", "--runs", "mesh,single,indivisible")
    mesh, single = split(r, "mesh"), split(r, "single")
    assert int(r["device_count"]) == 4 and int(mesh["n_devices"]) == 4 and int(single["n_devices"]) == 1
    assert bool(mesh["batch_sharded"]), f"the training batch was not sharded: {mesh['batch_sharding']}"
    assert bool(mesh["params_replicated"])
    assert int(mesh["step"]) == int(single["step"]) == 20
    np.testing.assert_allclose(mesh["losses"], single["losses"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(mesh["valid_loss"], single["valid_loss"], atol=1e-5, rtol=0)  # unsplit valid batch
    keys = [k for k in single if k.startswith(("param:", "stat:"))]
    assert any(k.startswith("stat:batch_stats") for k in keys)
    for k in keys:
        np.testing.assert_allclose(mesh[k], single[k], atol=1e-5, rtol=0, err_msg=k)
    assert "batch size 30 is not divisible by the 4 devices" in str(r["indivisible"])
    assert "e.g. 32" in str(r["indivisible"])


class TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def test_a_one_device_mesh_trains_like_no_mesh(tiny_data):
    """The mesh code path (replicated state, sharding constraints) on the one device of this process."""
    x, y = tiny_data
    runs = []
    for mesh in (True, False):
        learn = Learner(TinyNet(), DataLoaders.from_arrays((x, y), (x, y), 16), optimizer=optax.sgd, mesh=mesh)
        learn.fit(2)
        runs.append((learn, learn.evaluate()))
    (a, ma), (b, mb) = runs
    assert a.mesh is not None and b.mesh is None and a.n_devices == b.n_devices == 1
    assert ma == pytest.approx(mb, abs=1e-6)
    for u, v in zip(jax.tree.leaves(a.state.params), jax.tree.leaves(b.state.params)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=1e-6)
    assert a.n_traces == 2, "the replicated state keeps one sharding from call to call"
    np.testing.assert_allclose(a.predict(x[:5], raw=True), b.predict(x[:5], raw=True), atol=1e-6)


def test_bad_meshes_are_refused(tiny_data):
    x, y = tiny_data
    dls = DataLoaders.from_arrays((x, y), (x, y), 16)
    with pytest.raises(ValueError, match="needs a 'data' axis"):
        Learner(TinyNet(), dls, mesh=Mesh(np.array(jax.devices()), ("batch",)))
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        Learner(TinyNet(), dls, mesh="data")
