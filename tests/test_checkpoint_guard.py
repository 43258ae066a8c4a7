"""What keeps a checkpoint directory whole: SIGTERM saves then stops, one writer per directory (a lock), a full
disk stops training with one clear error, and a resume keeps what this Learner states explicitly (an lr), warns
about a training set of another size, and restores a stateful RNN."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
from functools import partial

import jax
import numpy as np
import optax
import pytest

from jaxlearn import text
from jaxlearn.callback import CancelFitException, Callback
from jaxlearn.callbacks import CheckpointCB, CheckpointError, Terminated, latest_step
from jaxlearn.callbacks import checkpoint as ckpt
from jaxlearn.callbacks.checkpoint_guard import LOCK_NAME
from jaxlearn.data import DataLoaders, identity
from jaxlearn.learner import Learner

from test_checkpoint import make_learner


class SendSigterm(Callback):
    """Sends this process SIGTERM in the middle of epoch ``epoch`` (after checking someone will catch it)."""
    def __init__(self, epoch):
        self.epoch = epoch

    def before_batch(self, learn):
        if learn.training and learn.epoch == self.epoch and learn.iter == 2:
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "SIGTERM would kill the test process"
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_saves_the_last_finished_epoch_then_stops(tiny_data, tmp_path):
    learn = make_learner(tiny_data)
    with pytest.raises(Terminated) as stopped:
        learn.fit(5, callbacks=[CheckpointCB(tmp_path, async_save=False), SendSigterm(epoch=2)])
    assert stopped.value.code == 143  # 128 + SIGTERM, as the signal itself would exit
    assert learn.epochs_done == 2 and latest_step(tmp_path) == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the fit put the default back
    assert not (tmp_path / LOCK_NAME).exists()


def _write_lock(directory, host, pid):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LOCK_NAME).write_text(json.dumps({"host": host, "pid": pid, "since": "2026-12-03 10:00:00"}))


def test_a_directory_another_run_writes_is_refused(tiny_data, tmp_path):
    learn = make_learner(tiny_data)
    _write_lock(tmp_path, socket.gethostname(), os.getppid())  # a live process on this host
    with pytest.raises(CheckpointError, match=rf"in use by another run: host .* PID {os.getppid()} holds its lock"):
        learn.fit(1, callbacks=[CheckpointCB(tmp_path)])
    _write_lock(tmp_path, "another-host.example", 12345)  # another host: no telling whether it is gone
    with pytest.raises(CheckpointError, match=r"another-host\.example.*if that run is gone, delete"):
        learn.fit(1, callbacks=[CheckpointCB(tmp_path)])
    assert learn.epochs_done == 0 and latest_step(tmp_path) is None
    with pytest.raises(CheckpointError, match="already being written by this process"):
        learn.fit(1, callbacks=[CheckpointCB(tmp_path / "b"), CheckpointCB(tmp_path / "b")])


def test_the_lock_of_a_run_that_died_is_taken_over(tiny_data, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _write_lock(tmp_path, socket.gethostname(), int(dead.stdout))
    learn = make_learner(tiny_data)
    learn.fit(1, callbacks=[CheckpointCB(tmp_path, async_save=False)])
    assert latest_step(tmp_path) == 1 and not (tmp_path / LOCK_NAME).exists()


def test_a_full_disk_stops_training_with_one_clear_error(tiny_data, tmp_path, monkeypatch, capfd):
    import orbax.checkpoint as ocp
    learn = make_learner(tiny_data)
    learn.fit(1, callbacks=[CheckpointCB(tmp_path, async_save=False)])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(ocp.StandardCheckpointHandler, "async_save", full)
    capfd.readouterr()
    with pytest.raises(CheckpointError, match=r"could not write checkpoint 2 .*the disk is full.*intact: \[1\]"):
        learn.fit(3, callbacks=[CheckpointCB(tmp_path, resume=True)])
    assert learn.epochs_done == 2  # it stopped at the first failed write, not 2 epochs later
    assert "Traceback" not in capfd.readouterr().err  # orbax's thread tracebacks are held back
    assert ckpt.checkpoint_steps(tmp_path) == [1] and not (tmp_path / LOCK_NAME).exists()


def test_resuming_keeps_this_learners_learning_rate_and_names_both(tiny_data, tmp_path):
    make_learner(tiny_data).fit(1, callbacks=[CheckpointCB(tmp_path, async_save=False)])  # at lr 0.1
    learn = make_learner(tiny_data)
    with pytest.warns(UserWarning, match=r"resuming with learning_rate 0\.02.*not the checkpoint's 0\.1"):
        learn.fit(2, lr=0.02, callbacks=[CheckpointCB(tmp_path, resume=True, async_save=False)])
    assert learn.epochs_done == 2
    np.testing.assert_allclose(float(learn.state.opt_state.hyperparams["learning_rate"]), 0.02)


def test_resuming_on_a_training_set_of_another_size_warns(tiny_data, tmp_path):
    make_learner(tiny_data).fit(1, callbacks=[CheckpointCB(tmp_path, async_save=False)])
    x, y = tiny_data
    smaller = make_learner((x[:48], y[:48]))
    with pytest.warns(UserWarning, match=r"trained on 96 examples \(6 steps per epoch\).*has 48 \(3 steps"):
        smaller.fit(2, callbacks=[CheckpointCB(tmp_path, resume=True, async_save=False)])
    assert smaller.epochs_done == 2


def test_a_stateful_rnn_resumes_where_it_stopped(tmp_path):
    ids = np.random.default_rng(0).integers(0, 12, (64, 5)).astype(np.int32)
    dls = DataLoaders.from_arrays((ids, np.roll(ids, -1, 1)), (ids[:16], np.roll(ids, -1, 1)[:16]), 16,
                                  transform=identity)

    def learner():
        return Learner(text.StatefulCharRnn(12, "gru", n_fac=4, n_hidden=8), dls, optimizer=partial(optax.adam),
                       lr=1e-2, seed=0, table=False)
    full = learner()
    full.fit(2)
    first = learner()
    first.fit(2, callbacks=[CheckpointCB(tmp_path, async_save=False), StopAfter(1)])
    resumed = learner()
    resumed.fit(2, callbacks=[CheckpointCB(tmp_path, resume=True, async_save=False)])
    assert resumed.epochs_done == 2
    for a, b in zip(jax.tree.leaves(jax.device_get(full.state.params)),
                    jax.tree.leaves(jax.device_get(resumed.state.params))):
        np.testing.assert_array_equal(a, b)


class StopAfter(Callback):
    """Ends the fit (as a cancel) after ``n`` epochs."""
    def __init__(self, n):
        self.n = n

    def after_epoch(self, learn):
        if learn.epochs_done >= self.n:
            raise CancelFitException
