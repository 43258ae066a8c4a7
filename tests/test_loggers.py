"""MetricsLoggerCB (JSON lines / CSV, one row per epoch) and the optional TensorBoard writer."""

import json
import struct

import flax.linen as nn
import optax
import pytest

from jaxlearn.callback import Callback
from jaxlearn.callbacks import CheckpointCB, MetricsCB, MetricsLoggerCB, TensorBoardCB, read_metrics
from jaxlearn.data import DataLoaders
from jaxlearn.learner import Learner


class TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


@pytest.fixture
def learn(tiny_data):
    x, y = tiny_data
    return Learner(TinyNet(), DataLoaders.from_arrays((x, y), (x[:48], y[:48]), 16), optimizer=optax.sgd, lr=0.1)


def test_jsonl_and_csv_rows_match_the_metrics(learn, tmp_path):
    metrics = MetricsCB(show=False)
    jl, cs = MetricsLoggerCB(tmp_path / "m.jsonl"), MetricsLoggerCB(tmp_path / "m.csv")
    assert (jl.format, cs.format) == ("jsonl", "csv")
    learn.fit(3, callbacks=[metrics, jl, cs])
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2] and [r["epochs_done"] for r in rows] == [1, 2, 3]
    assert [r["step"] for r in rows] == [6, 12, 18]
    for row, hist in zip(rows, metrics.history):
        for k in ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy"):
            assert row[k] == hist[k]
        assert row["lr"] == pytest.approx(0.1)
    csv_rows = read_metrics(tmp_path / "m.csv")
    assert (tmp_path / "m.csv").read_text().splitlines()[0].startswith("epoch,epochs_done,step,train_loss")
    for a, b in zip(csv_rows, rows):
        assert a.keys() == b.keys()
        assert all(a[k] == pytest.approx(b[k]) for k in a if k not in ("seconds", "time"))
    # a later fit appends; a train-only fit has fewer columns (CSV keeps one header)
    learn.fit(1, valid=False, callbacks=[jl, cs])
    assert len(read_metrics(tmp_path / "m.jsonl")) == len(read_metrics(tmp_path / "m.csv")) == 4
    assert "valid_loss" not in read_metrics(tmp_path / "m.csv")[-1]
    # a new callback on the same file starts it afresh
    learn.fit(1, callbacks=[MetricsLoggerCB(tmp_path / "m.jsonl")])
    assert [r["epochs_done"] for r in read_metrics(tmp_path / "m.jsonl")] == [5]
    with pytest.raises(ValueError, match="format must be 'jsonl' or 'csv'"):
        MetricsLoggerCB(tmp_path / "m.txt", format="xml")


def test_a_resumed_run_drops_rows_past_the_checkpoint(tiny_data, tmp_path):
    x, y = tiny_data

    class Stop(Callback):
        order = 85  # after the logger (80), before the checkpoint (90)

        def after_epoch(self, learn):
            if learn.epochs_done == 3 and not learn.training:  # epoch 3 logged, then "killed" before its save
                raise KeyboardInterrupt

    def new():
        return Learner(TinyNet(), DataLoaders.from_arrays((x, y), (x[:48], y[:48]), 16), optimizer=optax.sgd)

    log, ck = tmp_path / "m.csv", tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        new().fit(4, callbacks=[MetricsLoggerCB(log), CheckpointCB(ck, every_n_epochs=2), Stop()])
    assert [r["epochs_done"] for r in read_metrics(log)] == [1, 2, 3]
    resumed = new()
    resumed.fit(4, callbacks=[MetricsLoggerCB(log), CheckpointCB(ck, every_n_epochs=2, resume=True)])
    assert [r["epochs_done"] for r in read_metrics(log)] == [1, 2, 3, 4]  # epoch 3 redone, not logged twice


def read_events(logdir):
    """Scalars from tensorboardX event files (TFRecord framing: length, crc, event proto, crc)."""
    from tensorboardX.proto import event_pb2
    scalars = {}
    for path in logdir.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                scalars.setdefault(v.tag, []).append((event.step, v.simple_value))
    return scalars


def test_tensorboard_scalars(learn, tmp_path):
    pytest.importorskip("tensorboardX", reason="TensorBoardCB needs the optional 'tensorboard' extra: "
                                               "pip install 'jaxlearn[tensorboard]'")
    metrics = MetricsCB(show=False)
    learn.fit(2, callbacks=[metrics, TensorBoardCB(tmp_path / "tb")])
    s = read_events(tmp_path / "tb")
    assert {"train/loss", "valid/loss", "train/accuracy", "valid/accuracy", "lr", "train/batch_loss"} <= set(s)
    assert [step for step, _ in s["valid/loss"]] == [6, 12]
    assert [v for _, v in s["valid/loss"]] == pytest.approx([h["valid_loss"] for h in metrics.history])
    assert [step for step, _ in s["train/batch_loss"]] == list(range(1, 13))
