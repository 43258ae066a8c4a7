"""jaxlearn.sharding.initialize_distributed: a process whose partners never come ends after its timeout with one
clear message naming the coordinator address, not jax's C++ abort minutes later; bad arguments fail at once."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxlearn.sharding import INIT_TIMEOUT_EXIT_STATUS, initialize_distributed

WORKER = Path(__file__).with_name("_two_process_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_process_whose_partner_never_starts_times_out_naming_the_coordinator(tmp_path):
    """Process 0 alone (its partner never connects) and process 1 alone (no coordinator listening), each one
    of two, with a 3 s timeout: both end within seconds (mostly jax's import), the message naming the address."""
    coordinators = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, str(WORKER), "--out", str(tmp_path / f"r{i}.npz"), "--runs", "mesh",
                               "--coordinator", coordinators[i], "--num-processes", "2", "--process-id", str(i),
                               "--init-timeout", "3"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert time.perf_counter() - start < 20  # jax's own timeout would end them after 3 + 30 s, with an abort
    for i, (p, (_, err)) in enumerate(zip(procs, outputs)):
        assert p.returncode == INIT_TIMEOUT_EXIT_STATUS, err[-3000:]
        assert f"jax.distributed did not start within 3 s: process {i} of 2" in err
        assert coordinators[i] in err and "Check failure" not in err
        assert not (tmp_path / f"r{i}.npz").exists()
    assert "but the other process has not connected to it" in outputs[0][1]
    assert "could not join the coordinator" in outputs[1][1]


@pytest.mark.parametrize("args,timeout_s,message", [
    (("localhost", 2, 0), 60, r"coordinator must be 'host:port' \(process 0's address, e\.g\. '10\.0\.0\.1:1234'\), "
                              r"got 'localhost'"),
    (("127.0.0.1:99999", 2, 0), 60, r"coordinator must be 'host:port'.*got '127\.0\.0\.1:99999'"),
    (("127.0.0.1:1234", 0, 0), 60, r"num_processes must be a positive integer, got 0"),
    (("127.0.0.1:1234", 2, 2), 60, r"process_id must be in 0\.\.1 \(num_processes 2\), got 2"),
    (("127.0.0.1:1234", 2, -1), 60, r"process_id must be in 0\.\.1 \(num_processes 2\), got -1"),
    (("127.0.0.1:1234", 2, 0), 0, r"timeout_s must be a positive number of seconds, got 0"),
])
def test_bad_arguments_fail_at_once(args, timeout_s, message):
    with pytest.raises(ValueError, match=message):
        initialize_distributed(*args, timeout_s=timeout_s)
