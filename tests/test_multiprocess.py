"""Two processes on 127.0.0.1 (jax.distributed + gloo CPU collectives, 2 devices each) train as one.

Each process holds the dataset; the Learner's mesh spans the 4 devices of both, and the jitted gather
produces the globally sharded batch. The result must equal a one-process, one-device run. The run writes
checkpoints with ``CheckpointCB(new_directory, resume=True)`` (process 0 decides there is nothing to resume,
and the other agrees), and a new Learner in each process resumes from them.
"""

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

WORKER = Path(__file__).with_name("_two_process_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_worker():
    spec = importlib.util.spec_from_file_location("_two_process_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_processes_equal_one_process(tmp_path):
    port = free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), "--out", str(tmp_path / f"r{i}.npz"), "--devices", "2",
                               "--runs", "mesh", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                               "--process-id", str(i), "--checkpoint", str(tmp_path / "ckpt")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for i in range(2)]
    try:
        with jax.default_device(jax.devices("cpu")[0]):  # meanwhile, in this process: one CPU device
            reference = load_worker().train(mesh=False)
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, f"process failed:\n{out[-6000:]}"

    results = [{k.split("|", 1)[1]: v for k, v in np.load(tmp_path / f"r{i}.npz").items() if k.startswith("mesh|")}
               for i in range(2)]
    first = np.load(tmp_path / "r0.npz")
    assert int(first["process_count"]) == 2 and int(first["device_count"]) == 4
    for r in results:
        assert int(r["n_devices"]) == 4 and bool(r["batch_sharded"]) and int(r["step"]) == 20
        np.testing.assert_allclose(r["losses"], reference["losses"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(r["valid_loss"], reference["valid_loss"], atol=1e-5, rtol=0)
        keys = [k for k in reference if k.startswith(("param:", "stat:"))]
        for k in keys:
            np.testing.assert_allclose(r[k], reference[k], atol=1e-5, rtol=0, err_msg=k)
    for k in results[0]:  # both processes hold the same replicated state
        np.testing.assert_array_equal(results[0][k], results[1][k], err_msg=k)

    from jaxlearn.callbacks import checkpoint_steps
    assert checkpoint_steps(tmp_path / "ckpt") == [1, 2]
    assert not (tmp_path / "ckpt" / "jaxlearn.lock").exists()  # process 0 held the folder's lock, and let it go
    for r in results:
        assert int(r["resumed_step"]) == 20 and bool(r["resumed_equal"])
