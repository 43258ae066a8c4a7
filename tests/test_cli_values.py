"""The experiments' command lines refuse a bad value at once, naming the flag (argparse's ``argument --flag:``),
before any data is read or anything compiled; and a run starts by clearing its folder's old results, so that
one that fails leaves no results of an earlier run beside its own figures. In-process: each script is imported
as a module and its ``parse_args`` / ``main`` called."""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

import runs  # experiments/runs.py (conftest puts experiments/ on the path)

from jaxlearn.data import DataFileError

ROOT = Path(__file__).resolve().parents[1]


def experiment(name: str):
    """The script as a module, under a name of its own ('makemore' would shadow other modules)."""
    module_name = f"experiment_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, ROOT / "experiments" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[module_name]


MAX_SEED = 2 ** 32 - 1


@pytest.mark.parametrize("name,argv,error", [
    # a seed jax.random.key would wrap (-1 was an OverflowError 20 s into the run)
    ("fashion_mnist", ["--seed", "-1"], f"argument --seed: seed must be in 0..{MAX_SEED} (2**32 - 1), got -1"),
    ("collab", ["--seed", str(MAX_SEED + 1)], f"argument --seed: seed must be in 0..{MAX_SEED} (2**32 - 1), got "
                                              f"{MAX_SEED + 1}"),
    ("makemore", ["--seed", "one"], f"argument --seed: expected an integer in 0..{MAX_SEED}, got 'one'"),
    # counts: -100 images trained on 59,900; 0 epochs meant "each rung's default"; 0 steps failed in n_epochs
    ("fashion_mnist", ["--n-train", "-100"], "argument --n-train: expected a positive integer (1 or more), got -100"),
    ("char_rnn", ["--epochs", "0"], "argument --epochs: expected a positive integer (1 or more), got 0"),
    ("char_rnn", ["--train-batches", "0"], "argument --train-batches: expected a positive integer (1 or more), got 0"),
    ("lesson17", ["--bs", "0"], "argument --bs: expected a positive integer (1 or more), got 0"),
    ("lesson17", ["--steps-per-call", "0"], "argument --steps-per-call: expected a positive integer (1 or more), "
                                            "got 0"),
    ("makemore", ["--steps", "0"], "argument --steps: expected a positive integer (1 or more), got 0"),
    ("makemore", ["--diag-steps", "-5"], "argument --diag-steps: expected a positive integer (1 or more), got -5"),
    ("resnet", ["--n-test", "2.5"], "argument --n-test: expected a positive integer, got '2.5'"),
    # numbers
    ("optimizers", ["--lr", "-0.1"], "argument --lr: expected a positive number, got -0.1"),
    ("collab", ["--lr", "nan"], "argument --lr: expected a positive number, got 'nan'"),
    ("resnet", ["--wd", "-1"], "argument --wd: expected a number of 0 or more, got -1"),
    ("resnet", ["--pct-start", "1"], "argument --pct-start: expected a number between 0 and 1 (both excluded), got 1"),
    ("resnet", ["--pad", "-1"], "argument --pad: expected an integer of 0 or more, got -1"),
    # --nfs ended in int() and ZeroDivisionError tracebacks
    ("resnet", ["--nfs", "abc"], "argument --nfs: expected comma-separated positive integers, e.g. 16,32,64, got "
                                 "'abc'"),
    ("resnet", ["--nfs", "8,0"], "argument --nfs: expected comma-separated positive integers, e.g. 16,32,64, got "
                                 "'8,0'"),
    # a filter matching nothing trained nothing and exited 0 with []
    ("optimizers", ["--only", "nosuchopt"], "--only nosuchopt: 'nosuchopt' is in none of the runs' names (sgd "
                                            "(wd 1e-4); momentum"),
    ("optimizers", ["--only", "sgd,adamm"], "--only sgd,adamm: 'adamm' is in none of the runs' names"),
])
def test_a_bad_value_is_refused_at_once_naming_the_flag(name, argv, error, capsys):
    with pytest.raises(SystemExit) as exit_info:
        experiment(name).parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{name}.py: error: {error}" in " ".join(err.split()), err


def test_good_values_still_parse():
    assert experiment("fashion_mnist").parse_args(["--seed", str(MAX_SEED), "--n-train", "1"]).seed == MAX_SEED
    args = experiment("resnet").parse_args(["--nfs", "8, 16", "--wd", "0", "--pad", "0", "--pct-start", "0.25"])
    assert (args.nfs, args.wd, args.pad, args.pct_start) == ("8,16", 0.0, 0, 0.25)
    assert experiment("optimizers").parse_args(["--only", "sgd,adam", "--lr", "1e9"]).only == "sgd,adam"
    assert experiment("char_rnn").parse_args([]).epochs is None  # no flag: each model's own epochs
    assert experiment("makemore").parse_args(["--quick"]).steps == 1000


def test_the_flag_types_by_themselves():
    assert runs.positive_int("3") == 3 and runs.non_negative_int("0") == 0 and runs.seed("0") == 0
    assert runs.positive_float("1e-3") == 1e-3 and runs.non_negative_float("0") == 0 and runs.fraction("0.3") == 0.3
    assert runs.positive_int_list(" 16,32 ,64") == "16,32,64"
    for parse, text in [(runs.positive_int, "0"), (runs.positive_float, "inf"), (runs.fraction, "0"),
                        (runs.seed, "4294967296"), (runs.positive_int_list, "8,,16"), (runs.non_negative_int, "x")]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def write_old_results(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"test_accuracy": 0.9, "epochs": 3}))
    (out / "health.json").write_text(json.dumps({"model": {"findings": []}}))
    (out / "loss.png").write_bytes(b"an earlier run's figure")
    (out / "notes.txt").write_text("the user's own file")


def test_prepare_run_clears_an_earlier_runs_results(tmp_path):
    write_old_results(tmp_path)
    out = runs.prepare_run(experiment("fashion_mnist").parse_args(["--out", str(tmp_path)]))
    assert out == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "notes.txt"]  # figures are overwritten


def test_a_ladder_that_gathers_its_rungs_keeps_them(tmp_path):
    """lesson17 merges each run's rungs into the results.json already there (and --report-only reads it)."""
    write_old_results(tmp_path)
    runs.prepare_run(experiment("lesson17").parse_args(["--out", str(tmp_path), "--report-only"]))
    assert json.loads((tmp_path / "results.json").read_text())["epochs"] == 3
    assert (tmp_path / "health.json").exists()


def test_a_run_that_fails_leaves_no_earlier_results(tmp_path, monkeypatch, capsys):
    """A run into a reused --out that fails (here: bad data, before training) must not leave the old
    results.json to be read as its own."""
    write_old_results(tmp_path)
    module = experiment("fashion_mnist")

    def corrupt(*args, **kwargs):
        raise DataFileError("corrupt data file train-images-idx3-ubyte.gz: simulated")
    monkeypatch.setattr(module, "fashion_mnist_loaders", corrupt)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--quick", "--no-progress", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "simulated" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "health.json").exists()
    assert (tmp_path / "notes.txt").read_text() == "the user's own file"
