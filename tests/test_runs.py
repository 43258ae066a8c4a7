"""experiments/runs.py: the experiments' shared command line, output folder check, strict JSON and divergence stop."""

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import runs  # experiments/runs.py (conftest puts experiments/ on the path)
from jaxlearn.callbacks import MetricsLoggerCB, read_metrics


def strict_loads(text: str):
    """json.loads that refuses NaN / Infinity, as parsers outside Python do."""
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def parser():
    p = runs.experiment_parser("demo", "A demo.", epochs=3, bs=64, lr=0.1, seed=0,
                               quick={"epochs": 1, "n_train": 8})
    p.add_argument("--n-train", type=int, default=None)
    return p


def test_defaults_and_help(parser):
    args = parser.parse_args([])
    assert (args.epochs, args.bs, args.lr, args.seed, args.n_train) == (3, 64, 0.1, 0, None)
    assert args.out == Path("runs/demo") and not (args.docs or args.quick or args.no_progress)
    text = parser.format_help()
    for flag in ("--epochs", "--bs", "--lr", "--seed", "--out", "--docs", "--quick", "--no-progress"):
        assert flag in text
    assert "(default: 3)" in text and "(default: runs/demo)" in text
    assert "--epochs 1 --n-train 8" in text  # --quick says what it does


def test_quick_sets_defaults_and_explicit_flags_win(parser):
    args = parser.parse_args(["--quick"])
    assert (args.epochs, args.n_train, args.bs) == (1, 8, 64)
    args = parser.parse_args(["--quick", "--epochs", "2"])
    assert (args.epochs, args.n_train) == (2, 8)
    assert parser.parse_args([]).epochs == 3  # a quick parse leaves the parser as it was


def test_docs_writes_to_docs_and_refuses_quick(parser, capsys):
    assert parser.parse_args(["--docs"]).out == Path("docs/demo")
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--docs", "--quick"])
    assert e.value.code == 2
    assert "--docs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--docs", "--out", "somewhere"])


def test_out_into_docs_needs_the_docs_flag(parser, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "docs/demo"])
    assert "use --docs" in capsys.readouterr().err
    assert parser.parse_args(["--out", "documents/demo"]).out == Path("documents/demo")


def test_not_applicable_flags_are_listed_and_refused(capsys):
    p = runs.experiment_parser("steps_only", None, seed=1, not_applicable={
        "epochs": "it trains for --steps", "bs": "fixed at 32", "lr": "the lecture's schedule"})
    assert "not used: it trains for --steps" in p.format_help()
    assert not hasattr(p.parse_args([]), "epochs")
    with pytest.raises(SystemExit):
        p.parse_args(["--epochs", "3"])
    assert "--epochs does not apply to steps_only.py: it trains for --steps" in capsys.readouterr().err


def test_none_default_shows_the_experiments_own_words():
    p = runs.experiment_parser("ladder", None, epochs=None, bs=None, lr=None, seed=0,
                               helps={"lr": "every rung's lr (default: the lesson's)"})
    assert "every rung's lr (default: the lesson's)" in p.format_help()
    assert "None" not in p.format_help()


def test_every_common_flag_needs_a_default_or_a_reason():
    with pytest.raises(TypeError, match="missing: \\['bs'\\]"):
        runs.experiment_parser("x", None, epochs=1, lr=0.1, seed=0)


def test_prepare_out_creates_and_checks_the_folder(tmp_path):
    out = runs.prepare_out(tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []  # the probe file is gone


@pytest.mark.parametrize("where", ["/proc/x", "file"])
def test_prepare_out_fails_fast_naming_the_path(tmp_path, where):
    path = tmp_path / "a_file" if where == "file" else Path(where)
    if where == "file":
        path.write_text("")
    t0 = time.perf_counter()
    with pytest.raises(runs.OutputDirError, match=re.escape(f"cannot write to the output folder {path}")):
        runs.prepare_out(path)
    assert time.perf_counter() - t0 < 1.0


def test_write_json_nulls_and_records_non_finite_values(tmp_path):
    obj = {"acc": np.float32(0.5), "steps": float("inf"),
           "runs": [{"name": "a", "losses": np.array([1.0, np.nan])}], "ok": [1, 2]}
    with pytest.warns(RuntimeWarning, match=r"steps, runs\[0\]\.losses\[1\]"):
        runs.write_json(tmp_path / "r.json", obj)
    saved = strict_loads((tmp_path / "r.json").read_text())
    assert saved["acc"] == 0.5 and saved["steps"] is None and saved["ok"] == [1, 2]
    assert saved["non_finite"] == {"steps": "inf"}
    assert saved["runs"][0] == {"name": "a", "losses": [1.0, None], "non_finite": {"losses[1]": "nan"}}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left


def test_write_json_of_finite_values_is_plain_json(tmp_path, recwarn):
    rows = [{"rung": "a", "loss": 2.0, "history": [{"epoch": 0}]}]
    runs.write_json(tmp_path / "r.json", rows, indent=1)
    assert (tmp_path / "r.json").read_text() == json.dumps(rows, indent=1) + "\n"
    assert not recwarn.list


def test_write_json_refuses_to_overwrite_a_non_finite_key(tmp_path):
    with pytest.raises(ValueError, match="already has a 'non_finite' key"):
        runs.write_json(tmp_path / "r.json", {"x": math.nan, "non_finite": "mine"})


def test_metrics_logger_writes_strict_json_lines(tmp_path):
    log = MetricsLoggerCB(tmp_path / "m.jsonl")
    log.write(None, {"epoch": 0, "train_loss": math.nan, "valid_loss": 1.5})
    line = (tmp_path / "m.jsonl").read_text()
    assert strict_loads(line) == {"epoch": 0, "train_loss": None, "valid_loss": 1.5,
                                  "non_finite": {"train_loss": "nan"}}
    assert read_metrics(tmp_path / "m.jsonl")[0]["train_loss"] is None


def test_check_finite_passes_finite_values():
    runs.check_finite(1.5, "training loss")
    runs.check_finite(np.ones(4), "training loss")
    runs.check_history([{"epoch": 0, "train_loss": 1.0, "valid_loss": 2.0}])


def test_divergence_messages_say_what_where_and_what_to_do():
    with pytest.raises(runs.DivergedError) as e:
        runs.check_history([{"epoch": 0, "train_loss": 2.3}, {"epoch": 1, "train_loss": math.nan}],
                           hint=runs.lower_lr_hint(1e9))
    assert str(e.value) == "diverged: training loss is nan at epoch 1 — lower the learning rate (--lr 1e+09)"
    with pytest.raises(runs.DivergedError, match="validation loss is inf at epoch 0, rung bn"):
        runs.check_history([{"epoch": 0, "train_loss": 2.0, "valid_loss": math.inf}], at="rung bn")
    with pytest.raises(runs.DivergedError, match="^diverged: the loss is nan at step 2$"):
        runs.check_finite(np.array([3.0, 2.0, np.nan, np.nan]), "the loss")


def test_exit_on_run_error_exits_2_with_the_message(capsys):
    @runs.exit_on_run_error
    def main(diverge: bool) -> str:
        if diverge:
            raise runs.DivergedError("diverged: training loss is nan at epoch 0")
        return "results"

    assert main(False) == "results"
    with pytest.raises(SystemExit) as e:
        main(True)
    assert e.value.code == 2
    assert capsys.readouterr().err == "diverged: training loss is nan at epoch 0\n"


@pytest.mark.parametrize("tqdm_first", [False, True])
def test_disable_progress_bars(tqdm_first):
    """Bars made after the call are disabled, whether or not tqdm was imported before it (fresh process:
    the switch is process-wide)."""
    code = f"import sys\nsys.path.insert(0, {str(Path(runs.__file__).parent)!r})\n" + (
        "import tqdm.auto\n" if tqdm_first else "") + (
        "from runs import disable_progress_bars\n"
        "disable_progress_bars()\n"
        "from tqdm.auto import tqdm\n"
        "assert tqdm(total=3).disable and tqdm(total=3, desc='x', leave=False).disable\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
