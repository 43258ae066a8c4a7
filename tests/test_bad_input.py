"""Bad input gives a specific, readable error before anything is compiled (and loses nothing).

Complements tests/test_learner.py::test_bad_inputs_fail_before_training and tests/test_data.py (batch size
0 / too large, missing / corrupt IDX and names files), which are not repeated here.
"""

import gzip
import shutil
import struct

import flax.linen as nn
import numpy as np
import optax
import pytest

from jaxlearn import data
from jaxlearn.callbacks import CheckpointCB, CheckpointError, restore_checkpoint
from jaxlearn.data import ArrayDataset, DataFileError, DataLoaders, load_dataset
from jaxlearn.learner import Learner

from _tiny import tiny_arrays


class TinyNet(nn.Module):
    classes: int = 3

    @nn.compact
    def __call__(self, x, train: bool = True):
        return nn.Dense(self.classes)(x.reshape(x.shape[0], -1))


class Embedder(nn.Module):
    """Expects integer token ids (makemore-style)."""
    @nn.compact
    def __call__(self, x, train: bool = True):
        return nn.Dense(3)(nn.Embed(27, 4)(x).reshape(x.shape[0], -1))


def dls_of(x, y, xv=None, yv=None, bs=16):
    return DataLoaders.from_arrays((x, y), (x if xv is None else xv, y if yv is None else yv), bs)


# ---------------------------------------------------------------------------------------- data vs model

def test_inputs_the_model_cannot_take(tiny_data):
    x, y = tiny_data
    with pytest.raises(ValueError, match=r"cannot be initialized on the training inputs \(per example shape "
                                         r"\(4, 4, 1\), dtype float32 after.*Input type must be an integer"):
        Learner(Embedder(), dls_of(x, y))
    with pytest.raises(ValueError, match=r"train and valid inputs differ: per example \(4, 4, 1\) uint8 vs "
                                         r"\(4, 4\) uint8"):
        Learner(TinyNet(), dls_of(x, y, x[..., 0], y))
    with pytest.raises(ValueError, match=r"train and valid inputs differ: .* uint8 vs .* float32"):
        Learner(TinyNet(), dls_of(x, y, x.astype(np.float32), y))


def test_labels_the_loss_cannot_take(tiny_data):
    x, y = tiny_data
    with pytest.raises(ValueError, match=r"valid labels span 5\.\.7 but the model has 3 outputs"):
        Learner(TinyNet(), dls_of(x, y, x, y + 5))
    with pytest.raises(ValueError, match=r"cross_entropy needs one integer class label per example.*"
                                         r"labels are \(\) float32"):
        Learner(TinyNet(), dls_of(x, y.astype(np.float32)))
    with pytest.raises(ValueError, match=r"cross_entropy needs one integer class label.*labels are \(1,\) int32"):
        Learner(TinyNet(), dls_of(x, y[:, None]))
    with pytest.raises(ValueError,
                       match=r"loss_fn cannot take the model's outputs \(\(3,\) float32 per example\) and the labels"):
        Learner(TinyNet(), dls_of(x, y), loss_fn=lambda p, t: optax.l2_loss(p, t[:, None, None]).sum(-1))
    with pytest.raises(ValueError, match="loss_fn must return one loss per example"):
        Learner(TinyNet(), dls_of(x, y),
                loss_fn=lambda p, t: optax.softmax_cross_entropy_with_integer_labels(p, t).mean())


# ------------------------------------------------------------------------------------- hyperparameters

@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_learning_rates(tiny_data, lr):
    x, y = tiny_data
    with pytest.raises(ValueError, match="lr must be a finite positive number"):
        Learner(TinyNet(), dls_of(x, y), lr=lr)


def test_bad_learning_rate_in_fit_and_other_fit_arguments(tiny_data):
    x, y = tiny_data
    learn = Learner(TinyNet(), dls_of(x, y), optimizer=optax.sgd)
    with pytest.raises(ValueError, match="lr must be a finite positive number, got 0"):
        learn.fit(1, lr=0)
    with pytest.raises(ValueError, match="lr must be a finite positive number, got -1"):
        learn.fit(1, lr=-1)
    for n in (-1, 0, 1.5):  # fit(0) is refused before any callback runs
        with pytest.raises(ValueError, match="n_epochs must be a positive integer"):
            learn.fit(n)
    with pytest.raises(ValueError, match="steps_per_call must be a positive integer"):
        Learner(TinyNet(), dls_of(x, y), steps_per_call=0)
    with pytest.raises(TypeError, match="seed must be an integer, got 1.5"):
        Learner(TinyNet(), dls_of(x, y), seed=1.5)
    for seed in (2 ** 32, 2 ** 32 + 1, -1):  # would wrap onto seed 0, 1, 2**32 - 1: two runs silently one
        with pytest.raises(ValueError, match=rf"seed must be in 0..4294967295 \(2\*\*32 - 1\), got {seed}"):
            Learner(TinyNet(), dls_of(x, y), seed=seed)
    with pytest.raises(ValueError, match=r"the dataset's seed must be in 0..4294967295"):
        DataLoaders.from_arrays((x, y), (x, y), 8, seed=-3)
    assert int(learn.state.step) == 0 and learn.n_traces == 0  # nothing ran, nothing compiled


@pytest.mark.parametrize("bs", [2.5, True, -3, "16"])
def test_bad_batch_sizes(bs):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        ArrayDataset(np.zeros((5, 2)), np.zeros(5, np.int32), bs)


def test_batch_larger_than_the_training_set(tiny_data):
    x, y = tiny_data
    with pytest.raises(ValueError, match=r"batch_size 128 is larger than the dataset \(96 examples\)"):
        dls_of(x, y, bs=128)


# ---------------------------------------------------------------------------------------------- datasets

def test_unknown_dataset_names():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnistt' \(did you mean 'mnist'\?\): known datasets are "
                                          r"'fashion_mnist', 'names', and the image-classification datasets"):
        load_dataset("mnistt")
    with pytest.raises(ValueError, match=r"unknown dataset 'Fashion-MNIST' \(did you mean 'fashion_mnist'\?\)"):
        load_dataset("Fashion-MNIST")


def test_load_dataset_names_and_its_missing_files(tmp_path):
    dls = load_dataset("names", batch_size=64)
    assert len(dls.train) == 182_625 and len(dls.valid) == 22_655 and len(dls.info["test"][0]) == 22_866
    assert len(dls.info["vocab"]) == 27 and dls.train.x.shape[1:] == (3,)
    with pytest.raises(DataFileError, match=r"missing data file .*nope\.txt"):
        load_dataset("names", path=tmp_path / "nope.txt")
    with pytest.raises(DataFileError, match=r"missing data file .*train-images-idx3-ubyte\.gz"):
        load_dataset("fashion_mnist", manual_dir=tmp_path)


def test_more_corrupt_data_files(tmp_path):
    names = tmp_path / "names.txt"
    names.write_bytes(b"emma\n\xff\xfeolivia\n")
    with pytest.raises(DataFileError, match=r"corrupt data file .*names\.txt: not readable as UTF-8"):
        data.load_names(names)
    names.write_text("\n\n")
    with pytest.raises(DataFileError, match="holds no names"):
        data.load_names(names)
    # labels outside 0..9 in an otherwise well-formed IDX set
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb", compresslevel=1) as f:
        f.write(struct.pack(">4I", 2051, 60000, 28, 28) + bytes(60000 * 28 * 28))
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">2I", 2049, 60000) + bytes([3] * 59999 + [12]))
    with pytest.raises(DataFileError, match=r"train-labels-idx1-ubyte\.gz: label 12 outside 0\.\.9"):
        data.check_fashion_mnist_dir(tmp_path)


# ------------------------------------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A Learner trained 2 epochs with a checkpoint after each (one compile for the whole module)."""
    x, y = tiny_arrays()
    d = tmp_path_factory.mktemp("ckpt")
    learn = Learner(TinyNet(), dls_of(x, y), optimizer=optax.sgd)
    learn.fit(2, callbacks=[CheckpointCB(d, async_save=False)])
    return x, y, d


def test_missing_or_empty_checkpoint_directories(saved, tmp_path):
    x, y, _ = saved
    learn = Learner(TinyNet(), dls_of(x, y), optimizer=optax.sgd)
    with pytest.raises(CheckpointError, match="no checkpoint directory .*nothing to resume from"):
        restore_checkpoint(learn, tmp_path / "absent")
    with pytest.raises(CheckpointError, match="no finished checkpoint in"):
        restore_checkpoint(learn, tmp_path)
    (tmp_path / "3.orbax-checkpoint-tmp-1234").mkdir()
    with pytest.raises(CheckpointError, match=r"only unfinished writes \(3\.orbax-checkpoint-tmp-1234\)"):
        restore_checkpoint(learn, tmp_path)
    assert learn.epochs_done == 0 and int(learn.state.step) == 0


def test_checkpoint_of_another_model_or_step(saved):
    x, y, d = saved
    other = Learner(TinyNet(classes=4), dls_of(x, y), optimizer=optax.sgd)
    with pytest.raises(CheckpointError, match=r"different model or optimizer: .*params/Dense_0/bias: "
                                              r"checkpoint \(3,\) float32, Learner \(4,\) float32"):
        restore_checkpoint(other, d)
    momentum = Learner(TinyNet(), dls_of(x, y), optimizer=optax.adam)
    with pytest.raises(CheckpointError, match="different model or optimizer: opt_state/.*missing from the checkpoint"):
        restore_checkpoint(momentum, d)
    with pytest.raises(CheckpointError, match=r"no checkpoint 7 in .*finished checkpoints: \[1, 2\]"):
        restore_checkpoint(other, d, step=7)


def test_corrupt_checkpoint_files(saved, tmp_path):
    x, y, d = saved
    learn = Learner(TinyNet(), dls_of(x, y), optimizer=optax.sgd)
    bad = tmp_path / "ckpt"
    shutil.copytree(d, bad)
    for f in (bad / "2" / "state").rglob("*"):  # scramble every array file of the latest checkpoint
        if f.is_file() and f.name not in ("_METADATA", "_CHECKPOINT_METADATA"):
            f.write_bytes(b"\x00garbage" * 7)
    with pytest.raises(CheckpointError, match=r"checkpoint .*2 is unreadable.*other checkpoints there: \[1\]"):
        restore_checkpoint(learn, bad, step=2)
    assert learn.epochs_done == 0  # the Learner is untouched
    with pytest.warns(UserWarning, match=r"checkpoint .*2 is unreadable.*restored the previous good checkpoint"):
        assert restore_checkpoint(learn, bad)["epochs_done"] == 1  # step=None (resuming) falls back to 1
    (bad / "1" / "learner" / "metadata").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"checkpoint .*1 is unreadable: its learner position"):
        restore_checkpoint(learn, bad, step=1)


def test_bad_checkpoint_callback_arguments(tmp_path):
    with pytest.raises(ValueError, match="every_n_epochs must be a positive integer"):
        CheckpointCB(tmp_path, every_n_epochs=0)
    with pytest.raises(ValueError, match="keep must be a positive integer or None"):
        CheckpointCB(tmp_path, keep=0)
