"""Damaged checkpoints fail loudly: per-array checksums, a checksummed position record, fallback to the
previous good checkpoint when none is asked for, and errors that name the file and the array."""

import json
import re
import shutil
import warnings
from functools import partial

import flax.linen as nn
import numpy as np
import optax
import pytest

from jaxlearn.callbacks import checkpoint_files as ckpt
from jaxlearn.callbacks import CheckpointCB, CheckpointError, restore_checkpoint
from jaxlearn.data import DataLoaders
from jaxlearn.learner import Learner

from _tiny import tiny_arrays


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.relu(nn.Dense(64)(x.reshape(x.shape[0], -1)))  # 4 KiB kernels: stored outside OCDBT's index
        return nn.Dense(3)(x)


def make_learner():
    x, y = tiny_arrays()
    return Learner(Net(), DataLoaders.from_arrays((x, y), (x[:40], y[:40]), 16),
                   optimizer=partial(optax.sgd, momentum=0.9), lr=0.1)


def host_state(learn):
    return ckpt.host_arrays(ckpt.state_dict(learn.state))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Checkpoints 1 and 2 of a 2-epoch run, and the state each holds (one compile for the module)."""
    d = tmp_path_factory.mktemp("ckpt")
    learn = make_learner()
    learn.fit(1, callbacks=[CheckpointCB(d, async_save=False)])
    first = host_state(learn)
    learn.fit(1, callbacks=[CheckpointCB(d, async_save=False)])  # continues: epoch 2
    return d, {1: first, 2: host_state(learn)}


@pytest.fixture
def copy(saved, tmp_path):
    """A fresh copy of the checkpoints to damage (tensorstore caches by path: every test has its own)."""
    shutil.copytree(saved[0], tmp_path / "ckpt")
    return tmp_path / "ckpt"


def assert_state(learn, expected):
    got = host_state(learn)
    assert got.keys() == expected.keys()
    assert all(np.array_equal(got[k], expected[k]) for k in got)


def stored_array(d):
    """(file, last byte, leaf name) of a params chunk stored in a data file of checkpoint 2."""
    values = ckpt._stored_values(d / "2" / "state")
    key = next(k for k in sorted(values) if k.startswith("params."))
    file, end = values[key]
    return d / "2" / "state" / file, end, ckpt._leaf_name(key)


def test_records_are_version_3_with_a_checksum_per_array(saved):
    d, states = saved
    record = json.loads((d / "2" / "learner" / "metadata").read_text())
    assert record["version"] == 3 == ckpt.VERSION
    assert record["n_train"] == 96 and record["steps_per_epoch"] == 6  # the training set's size (version 3)
    assert record["checksums"].keys() == states[2].keys()
    assert record["record_checksum"] == ckpt._record_checksum(record)


def test_a_flipped_byte_in_an_array_file_is_caught(saved, copy):
    path, end, leaf = stored_array(copy)
    assert path.parent.parent.name == "ocdbt.process_0"  # the data files the example damages
    raw = bytearray(path.read_bytes())
    raw[end - 16] ^= 0x01  # one bit inside the array's stored bytes: still decodes, to different numbers
    path.write_bytes(bytes(raw))
    learn = make_learner()
    with pytest.raises(CheckpointError, match=rf"checkpoint .*ckpt/2 is corrupt: array {leaf} does not match "
                                              r"the checksum saved with it; other checkpoints there: \[1\]"):
        restore_checkpoint(learn, copy, step=2)
    assert learn.epochs_done == 0  # nothing of the damaged checkpoint reached the Learner

    with pytest.warns(UserWarning, match=rf"ckpt/2 is corrupt: array {leaf} .*restored the previous good "
                                         r"checkpoint, .*ckpt/1, instead"):
        position = restore_checkpoint(learn, copy)  # step=None, as when a fit resumes
    assert position["epochs_done"] == learn.epochs_done == 1
    assert_state(learn, saved[1][1])


def test_truncated_or_deleted_array_file_names_the_file_and_the_array(copy, capfd):
    path = stored_array(copy)[0]
    in_file = {ckpt._leaf_name(k) for k, (f, _) in ckpt._stored_values(copy / "2" / "state").items()
               if copy / "2" / "state" / f == path}
    path.write_bytes(path.read_bytes()[:100])
    learn = make_learner()
    with pytest.raises(CheckpointError) as info:
        restore_checkpoint(learn, copy, step=2)
    message = str(info.value)
    named = re.search(rf"is unreadable: array (\S+) cannot be read, its data file {re.escape(str(path))} is cut "
                      rf"short: 100 bytes, the array's data ends at byte \d+", message)
    assert named and named.group(1) in in_file, message
    assert "TensorStore" not in message and "'driver'" not in message  # no tensorstore spec dumped
    path.unlink()
    with pytest.raises(CheckpointError, match=rf"array \S+ cannot be read, its data file {re.escape(str(path))} is "
                                              rf"missing"):
        restore_checkpoint(learn, copy, step=2)
    assert "Exception ignored" not in capfd.readouterr().err  # orbax's abandoned reads stay quiet


def test_undecodable_array_bytes_name_the_array_and_file(copy, capfd):
    import tensorstore as ts
    store = ts.KvStore.open({"driver": "file", "path": f"{copy}/2/state/"}).result()
    root = ts.ocdbt.dump(store).result()["versions"][-1]["root"]["location"]
    value = next(e["indirect_value"] for e in ts.ocdbt.dump(store, root).result()["entries"] if "indirect_value" in e)
    kind_and_paths, offset, _ = value.rsplit(":", 2)
    path = copy / "2" / "state" / "".join(kind_and_paths.split(":")[1:])
    raw = bytearray(path.read_bytes())
    raw[int(offset)] ^= 0xFF  # the zstd frame's magic number: this array's bytes no longer decode
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=rf"ckpt/2 is unreadable: array \S+ failed to load from "
                                              rf"{re.escape(str(path))}: its bytes do not decode \(ValueError: .*"
                                              r"Error reading \"[^\"]+\" in OCDBT database"):
        restore_checkpoint(make_learner(), copy, step=2)
    assert "Exception ignored" not in capfd.readouterr().err


def test_a_damaged_position_record_is_caught(copy):
    record = copy / "2" / "learner" / "metadata"
    text = record.read_text()
    assert '"epochs_done": 2' in text
    record.write_text(text.replace('"epochs_done": 2', '"epochs_done": 3'))  # one digit: still valid JSON
    learn = make_learner()
    with pytest.raises(CheckpointError, match=r"ckpt/2 is corrupt: its learner position record \(JSON\) does "
                                              r"not match the checksum saved in it"):
        restore_checkpoint(learn, copy, step=2)
    record.write_text("{not json")
    with pytest.warns(UserWarning, match=r"ckpt/2 is unreadable: its learner position \(JSON\) failed to load"):
        assert restore_checkpoint(learn, copy)["epochs_done"] == 1


def test_no_readable_checkpoint_at_all(copy):
    for step in (1, 2):
        (copy / str(step) / "learner" / "metadata").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"no readable checkpoint in .*ckpt: checkpoint .*2 is unreadable"
                                              r".*; checkpoint .*1 is unreadable"):
        restore_checkpoint(make_learner(), copy)


def test_an_intact_latest_checkpoint_loads_without_warnings(saved):
    learn = make_learner()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert restore_checkpoint(learn, saved[0])["epochs_done"] == 2
    assert_state(learn, saved[1][2])


def test_version_1_checkpoints_without_checksums_still_load(saved, copy):
    record_path = copy / "2" / "learner" / "metadata"
    record = json.loads(record_path.read_text())
    del record["checksums"], record["record_checksum"]
    record_path.write_text(json.dumps({**record, "version": 1}))
    learn = make_learner()
    assert restore_checkpoint(learn, copy, step=2)["version"] == 1
    assert_state(learn, saved[1][2])


def test_a_checkpoint_of_a_newer_format_is_refused_by_name(copy):
    record_path = copy / "2" / "learner" / "metadata"
    record = {**json.loads(record_path.read_text()), "version": ckpt.VERSION + 1}
    record["record_checksum"] = ckpt._record_checksum(record)
    record_path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=rf"format version {ckpt.VERSION + 1}, newer than this jaxlearn"):
        restore_checkpoint(make_learner(), copy, step=2)
