"""experiments/char_rnn.py and the stateful RNN on the one core: the --quick ladder writes strict-JSON rows
whose loss fell, and the Learner carries the hidden state from each batch to the next."""

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from jaxlearn import text
from jaxlearn.losses import cross_entropy
from jaxlearn.step import CARRY
from jaxlearn.data import DataLoaders
from jaxlearn.learner import Learner

ROOT = Path(__file__).resolve().parents[1]
ROW_FIELDS = {"model", "valid_loss", "lesson_loss", "epochs", "seconds", "bptt", "weight_decay"}

pytestmark = pytest.mark.skipif(text.NIETZSCHE_ENV not in os.environ,
                                reason=f"nietzsche.txt not available: set {text.NIETZSCHE_ENV} to its path")


def strict_json(path: Path):
    def refuse(name):
        raise ValueError(f"{path} is not strict JSON: {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_quick_ladder_writes_rows_with_a_falling_loss(tmp_path):
    # two rungs, a window model and a stateful one, keep the subprocess to seconds
    proc = subprocess.run([sys.executable, "experiments/char_rnn.py", "--quick", "--no-progress", "--out",
                           str(tmp_path), "--models", "char3", "stateful_rnn"], cwd=ROOT,
                          env={**os.environ, "MPLBACKEND": "Agg"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = strict_json(tmp_path / "results.json")
    assert [r["name"] for r in rows] == ["char3", "stateful_rnn"]
    for row in rows:
        assert ROW_FIELDS <= set(row)
        assert math.isfinite(row["valid_loss"]) and row["epochs"] == 1 and row["seconds"] > 0
        assert row["valid_loss"] < row["init_valid_loss"] - 0.5  # from ~ln(vocab size) at init
    assert rows[0]["lesson_loss"] is None and rows[1]["lesson_loss"] == 1.54
    assert [r["vocab_size"] for r in rows] == [85, 56]  # each lesson's vocabulary
    samples = strict_json(tmp_path / "samples.json")
    assert all(len(s) == 300 for model in samples.values() for s in model.values())
    assert (tmp_path / "grad_norms.png").stat().st_size > 0 and (tmp_path / "README.md").exists()


def tiny_stateful_loaders(n_batches: int, batch_size: int = 4) -> DataLoaders:
    dls = text.nietzsche_loaders("stateful", batch_size, bptt=8)
    n = n_batches * batch_size  # the first n_batches slices of every stream: still continuous
    train = dataclasses.replace(dls.train, x=dls.train.x[:n], y=dls.train.y[:n])
    valid = dataclasses.replace(dls.valid, x=dls.valid.x[:n], y=dls.valid.y[:n])
    return DataLoaders(train, valid, dls.info)


def manual_final_carry(model: text.StatefulCharRnn, params, dls: DataLoaders, carry_over: bool):
    bs = dls.train.batch_size
    h = model.zero_state(bs)
    for k in range(dls.train.n_batches):
        x = dls.train.x[k * bs:(k + 1) * bs]
        h0 = h if carry_over else model.zero_state(bs)
        _, new = model.apply({"params": params, CARRY: {"h": h0}}, x, train=True, mutable=[CARRY])
        h = new[CARRY]["h"]
    return h


@pytest.mark.parametrize("cell", ["lstm"])  # its (c, h) carry is the general case
def test_learner_carries_the_state_from_batch_to_batch(cell):
    dls = tiny_stateful_loaders(n_batches=6)
    model = text.StatefulCharRnn(len(dls.info["vocab"]), cell, n_fac=8, n_hidden=16)
    learn = Learner(model, dls, loss_fn=cross_entropy, optimizer=optax.sgd, lr=0.1,
                    steps_per_call=4)  # calls of 4 and 2 steps: the carry also crosses a call boundary
    params = jax.tree.map(np.array, learn.state.params)
    learn.set_hyper("learning_rate", 0.0)  # frozen weights: the carry then depends on the batches only
    learn.fit(1, valid=False)
    carried = learn.state.model_state[CARRY]["h"]
    assert all(np.abs(leaf).max() > 0.01 for leaf in jax.tree.leaves(carried))
    expected = manual_final_carry(model, params, dls, carry_over=True)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), carried, expected)
    fresh = manual_final_carry(model, params, dls, carry_over=False)  # each batch from zeros: not what ran
    assert max(np.abs(a - b).max() for a, b in zip(jax.tree.leaves(carried), jax.tree.leaves(fresh))) > 1e-3

    learn.set_hyper("learning_rate", 0.1)
    learn.fit(1, valid=False)  # real training: the epoch starts from a reset carry and ends with a carried one
    assert all(np.abs(leaf).max() > 0.01 for leaf in jax.tree.leaves(learn.state.model_state[CARRY]["h"]))
    assert np.isfinite(learn.evaluate()["loss"])


def load_char_rnn_experiment():
    import importlib.util
    spec = importlib.util.spec_from_file_location("experiment_char_rnn", ROOT / "experiments" / "char_rnn.py")
    char_rnn = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = char_rnn  # dataclasses look their module up there
    spec.loader.exec_module(char_rnn)
    return char_rnn


def test_lesson_protocol_gathers_its_rungs_beside_the_held_out_ones(tmp_path, monkeypatch):
    char_rnn = load_char_rnn_experiment()
    assert char_rnn.parse_args(["--full", "--out", str(tmp_path)]).protocol == "lesson"
    # a row of the default ladder, held out
    (tmp_path / "results.json").write_text(json.dumps([{"name": "char3", "model": "Char3Model", "valid_loss": 1.9,
                                                        "schedule": "4 drop", "lesson_note": "no number"}]))
    # and a row of an earlier --protocol lesson run, which this one adds to
    earlier = {"name": "seq_rnn", "model": "CharSeqRnn", "protocol": "lesson", "valid_loss": 2.0, "split": "random",
               "schedule": "4 constant + 1 constant @0.0001", "lesson_note": "no number", "lesson_loss": None,
               "notebook_loss": 2.01564,
               "valid_accuracy": 0.4, "epochs": 5, "vocab_size": 85, "vocab": "lesson6", "lr": 1e-3, "l2": 0.0,
               "params": 100, "seconds": 1.0}
    other_seed = {**earlier, "valid_loss": 2.2, "seed": 1}  # the same rung run again with --seed 1
    (tmp_path / "lesson").mkdir()
    (tmp_path / "lesson" / "results.json").write_text(json.dumps([other_seed, earlier]))
    # the notebook's PyTorch code's result for it (benchmarks/lesson_protocol_torch.py)
    monkeypatch.setattr(char_rnn, "TORCH_REFERENCE", tmp_path / "torch.json")
    (tmp_path / "torch.json").write_text(json.dumps({"seq_rnn": {"valid_loss": 1.99}}))
    char_rnn.main(["--protocol", "lesson", "--quick", "--no-progress", "--out", str(tmp_path), "--models", "char3",
                   "--train-batches", "4", "--valid-batches", "2"])
    rows = strict_json(tmp_path / "lesson" / "results.json")
    # in the ladder's order, each rung's seeds ascending
    assert [r["name"] for r in rows] == ["char3", "seq_rnn", "seq_rnn"] and rows[1:] == [earlier, other_seed]
    assert rows[0]["protocol"] == "lesson" and rows[0]["split"] == "random" and rows[0]["init"] == "torch"
    assert rows[0]["seed"] == 0
    table = (tmp_path / "side_by_side.md").read_text()
    assert "| Char3Model (3 chars → 4th) |" in table and "| 1.9000 (4 drop) |" in table
    assert ("| CharSeqRnn | no number | 2.0156 | **2.0000** (4 constant + 1 constant @0.0001, random split); seeds "
            "0, 1: 2.0000, 2.2000, mean 2.1000 | 1.9900 | – | not run |") in table


def test_side_by_side_judges_a_rung_run_with_several_seeds_on_their_mean(tmp_path, monkeypatch):
    char_rnn = load_char_rnn_experiment()
    monkeypatch.setattr(char_rnn, "TORCH_REFERENCE", tmp_path / "none.json")
    row = {"name": "gru", "model": "GRU", "protocol": "lesson", "split": "end", "lesson_loss": 1.40,
           "lesson_note": "1.40", "schedule": "9 constant", "history": []}
    (tmp_path / "lesson").mkdir()
    (tmp_path / "results.json").write_text(json.dumps([{**row, "valid_loss": 1.45}]))
    lesson = tmp_path / "lesson" / "results.json"
    lesson.write_text(json.dumps([{**row, "valid_loss": 1.43}]))
    assert "| no (±0.02) |" in char_rnn.side_by_side(tmp_path)  # 0.03 from the lesson's 1.40
    lesson.write_text(json.dumps([{**row, "valid_loss": 1.43}, {**row, "valid_loss": 1.39, "seed": 2}]))
    assert ("**1.4300** (9 constant, end split); seeds 0, 2: 1.4300, 1.3900, mean 1.4100 | – "
            "| yes (±0.02, mean of 2 seeds) |") in char_rnn.side_by_side(tmp_path)
