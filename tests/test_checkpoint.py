"""Checkpoints: bitwise resume, keep / every_n_epochs, Ctrl-C, and writes that fail midway."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from functools import partial

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from jaxlearn.callbacks import checkpoint as ckpt, checkpoint_files
from jaxlearn.callback import Callback
from jaxlearn.callbacks import CheckpointCB, CheckpointError, MetricsCB, latest_step, restore_checkpoint
from jaxlearn.data import DataLoaders
from jaxlearn.learner import Learner
from jaxlearn.trees import copy_state

from _tiny import tiny_arrays


class Net(nn.Module):
    """Dense → BatchNorm → relu → dropout → Dense: norm statistics and dropout keys to carry over."""
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Dense(16)(x.reshape(x.shape[0], -1))
        x = nn.relu(nn.BatchNorm(momentum=0.9)(x, use_running_average=not train))
        x = nn.Dropout(0.2, deterministic=not train)(x)
        return nn.Dense(3)(x)


class Noise(Callback):
    """Random augmentation inside the step: it must follow the seed and the step across a resume."""
    def batch_transform(self, x, training, key):
        return x + 0.05 * jax.random.normal(key, x.shape) if training else x


class Interrupt(Callback):
    """Simulates a Ctrl-C: KeyboardInterrupt in the middle of training epoch ``epoch``."""
    def __init__(self, epoch):
        self.epoch = epoch

    def before_batch(self, learn):
        if learn.training and learn.epoch == self.epoch and learn.iter == 2:
            raise KeyboardInterrupt


def make_learner(data, seed=0):
    x, y = data
    dls = DataLoaders.from_arrays((x, y), (x[:40], y[:40]), 16)
    return Learner(Net(), dls, optimizer=partial(optax.sgd, momentum=0.9), lr=0.1, seed=seed,
                   callbacks=[Noise()])


def leaves(learn):
    return jax.tree.leaves(jax.device_get(checkpoint_files.state_dict(learn.state)))


def assert_bitwise_equal(a, b):
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb):
        assert u.dtype == v.dtype and np.array_equal(u, v), "states differ"


def rows(metrics):
    return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in metrics.history]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """An uninterrupted 4-epoch run, checkpointing every 3 epochs and keeping 1 (one compile, shared)."""
    x, y = tiny_arrays()
    d = tmp_path_factory.mktemp("full")
    metrics, cb = MetricsCB(show=False), CheckpointCB(d, every_n_epochs=3, keep=1, async_save=False)
    learn = make_learner((x, y))
    learn.fit(4, callbacks=[metrics, cb])
    return learn, metrics, cb, d


def test_interrupted_then_resumed_run_is_bitwise_identical(tiny_data, tmp_path, full):
    full, full_metrics, _, _ = full
    d = tmp_path / "ckpt"
    run = make_learner(tiny_data)
    with pytest.raises(KeyboardInterrupt):
        run.fit(4, callbacks=[CheckpointCB(d), Interrupt(epoch=2)])
    assert latest_step(d) == 2 == run.epochs_done  # epoch 3 was cut short: the last finished one is saved

    resumed_metrics = MetricsCB(show=False)
    resumed = make_learner(tiny_data)
    resumed.fit(4, callbacks=[CheckpointCB(d, resume=True), resumed_metrics])
    # epochs 0, 1 are skipped; their rows come from the checkpoint, so the history is the whole run's
    assert [r["epoch"] for r in rows(resumed_metrics)] == [0, 1, 2, 3]
    assert rows(resumed_metrics) == rows(full_metrics)  # exact floats, not approximately
    assert_bitwise_equal(resumed, full)
    assert resumed.epochs_done == full.epochs_done == 4
    assert latest_step(d) == 4


def test_every_n_epochs_keep_final_save_and_seed(tiny_data, full):
    learn, _, cb, d = full
    assert cb.saved == [3, 4]  # every 3 epochs, and the last finished one when the fit ends
    assert ckpt.checkpoint_steps(d) == [4]  # keep=1
    fresh = make_learner(tiny_data, seed=4)
    with pytest.warns(UserWarning, match="seed 0"):  # the run's seed wins: its data order goes on
        position = restore_checkpoint(fresh, d)
    assert position["epochs_done"] == fresh.epochs_done == 4 and position["fit_epoch"] == 4
    assert fresh.seed == 0 and int(fresh.state.step) == 4 * 6
    assert_bitwise_equal(fresh, learn)
    assert set(position["metrics"]) == {"loss", "accuracy"}


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tiny_data, tmp_path, monkeypatch):
    import orbax.checkpoint as ocp
    from orbax.checkpoint._src.path import async_path
    learn = make_learner(tiny_data)
    learn.fit(1, callbacks=[CheckpointCB(tmp_path, async_save=False)])
    after_one = copy_state(learn.state)  # fit() donates learn.state's buffers

    def boom(*args, **kwargs):
        raise OSError("simulated disk failure in the middle of a checkpoint write")
    # dies while writing the arrays; then: everything written to the temporary directory, dies at the rename
    for module, name in ((ocp.StandardCheckpointHandler, "async_save"), (async_path, "rename")):
        with monkeypatch.context() as m:
            m.setattr(module, name, boom)
            with pytest.raises(Exception, match="simulated disk failure"):
                learn.fit(2, callbacks=[CheckpointCB(tmp_path, async_save=False, resume=True)])
        assert learn.epochs_done == 2 and latest_step(tmp_path) == 1  # the unfinished write is not a checkpoint
        restore_checkpoint(learn, tmp_path)
        assert learn.epochs_done == 1
        assert all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(jax.device_get(after_one.params)),
                                                         jax.tree.leaves(jax.device_get(learn.state.params))))
    assert [p.name for p in tmp_path.iterdir() if ".orbax-checkpoint-tmp" in p.name], \
        "the write that failed at the rename stayed in its temporary directory"
    # and training resumes past it, writing epoch 2 properly this time
    learn.fit(2, callbacks=[CheckpointCB(tmp_path, async_save=False, resume=True)])
    assert ckpt.checkpoint_steps(tmp_path) == [1, 2]


def test_ctrl_c_in_a_real_process_leaves_a_loadable_checkpoint(tmp_path):
    """SIGINT to a training process: it stops, and what it leaves is restorable (a subprocess, ~10 s)."""
    script = textwrap.dedent(f"""
        import faulthandler, signal, sys, time
        # a terminal's Ctrl-C, even when pytest runs as a background job (which inherits SIGINT ignored)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # where it waits, should it ever hang
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_checkpoint import make_learner, CheckpointCB, tiny_arrays
        from jaxlearn.callback import Callback
        class Slow(Callback):
            def after_batch(self, learn):
                time.sleep(0.05)
        learn = make_learner(tiny_arrays())
        print("ready", flush=True)
        learn.fit(1000, callbacks=[CheckpointCB({str(tmp_path)!r}, keep=2), Slow()])
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.time() + 60
        while latest_step(tmp_path) is None:
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "no checkpoint written in 60 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)
            time.sleep(2)
            proc.kill()
            pytest.fail("no exit within 60 s of SIGINT; the child's threads:\n" + proc.communicate()[1][-6000:])
    finally:
        proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    steps = ckpt.checkpoint_steps(tmp_path)
    assert steps and len(steps) <= 2
    x, y = tiny_arrays()
    learn = make_learner((x, y))
    position = restore_checkpoint(learn, tmp_path)
    assert position["epochs_done"] == steps[-1] >= 1 and int(learn.state.step) == 6 * steps[-1]


def test_checkpoint_dir_of_another_run_is_not_overwritten(tiny_data, tmp_path, full):
    shutil.copytree(full[3], tmp_path, dirs_exist_ok=True)
    fresh = make_learner(tiny_data)  # epochs_done 0; the error comes before any step, nothing compiles
    with pytest.raises(CheckpointError, match="already holds checkpoints of a run at epoch 4.*resume=True"):
        fresh.fit(1, callbacks=[CheckpointCB(tmp_path)])
    assert ckpt.checkpoint_steps(tmp_path) == [4]
    fresh.fit(1, callbacks=[CheckpointCB(tmp_path, overwrite=True, async_save=False)])
    assert ckpt.checkpoint_steps(tmp_path) == [1]
