"""The experiments' shared command line (experiments/runs.py): every script lists the common flags, writes to
runs/<name> unless --docs, finishes a --quick run in seconds writing only into its --out folder, exits
non-zero on a diverged loss and fails at once on an unwritable --out."""

import functools
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ["fashion_mnist", "lesson17", "optimizers", "makemore", "resnet", "why_it_works", "collab", "char_rnn"]
COMMON_FLAGS = ["--epochs", "--bs", "--lr", "--seed", "--out", "--docs", "--quick", "--no-progress", "--diagnose"]
ENV = {**os.environ, "MPLBACKEND": "Agg"}


@functools.cache
def experiment(name: str):
    """The script as a module, under a name of its own ('makemore' would shadow other modules)."""
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run(name: str, *args: str) -> subprocess.CompletedProcess:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, f"experiments/{name}.py", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    print(f"{name} {' '.join(args)}: {time.perf_counter() - t0:.1f} s")  # shown with pytest -s / on failure
    return proc


def strict_json(path: Path):
    def refuse(name):
        raise ValueError(f"{path} is not strict JSON: {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


def git_status() -> set[str]:
    return set(subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.splitlines())


@pytest.fixture
def repository_untouched():
    """The run must write only into its --out folder: no file of the repository (docs/ above all) may
    appear or change in git status. (New lines only, so that others' edits made before it do not count.)"""
    before = git_status()
    yield
    assert git_status() - before == set()


def test_every_experiment_lists_the_common_flags():
    procs = {name: subprocess.Popen([sys.executable, f"experiments/{name}.py", "--help"], cwd=ROOT, env=ENV,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in EXPERIMENTS}  # at once: each is mostly imports
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        text = " ".join(out.split())  # as one line: argparse wraps help to the terminal's width
        assert [flag for flag in COMMON_FLAGS if flag not in text] == [], name
        assert f"(default: runs/{name})" in text


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_outputs_go_to_runs_and_to_docs_only_with_docs(name, capsys):
    parse_args = experiment(name).parse_args
    assert parse_args([]).out == Path("runs") / name
    assert parse_args(["--docs"]).out == Path("docs") / name
    with pytest.raises(SystemExit):
        parse_args(["--docs", "--quick"])
    assert "--docs" in capsys.readouterr().err


@pytest.mark.parametrize("name,quick", [
    ("fashion_mnist", {"epochs": 1, "n_train": 1024}),
    ("lesson17", {"rungs": ["batchnorm"], "epochs": 1, "n_train": 1024}),
    ("optimizers", {"epochs": 1, "n_train": 1024, "only": "sgd"}),
    ("makemore", {"steps": 1000, "skip_deep": True}),
    ("resnet", {"epochs": 1, "n_train": 512, "n_test": 512}),
    ("why_it_works", {"quick": True}),
    ("collab", {"epochs": 1, "bs": 1024}),
    ("char_rnn", {"epochs": 1, "train_batches": 24, "valid_batches": 8}),
])
def test_quick_settings(name, quick):
    args = vars(experiment(name).parse_args(["--quick"]))
    assert {k: args[k] for k in quick} == quick


@pytest.mark.parametrize("name", ["makemore", "why_it_works"])
def test_flags_an_experiment_cannot_honour_are_refused(name, capsys):
    with pytest.raises(SystemExit):
        experiment(name).parse_args(["--lr", "0.1"])
    assert "--lr does not apply" in capsys.readouterr().err


def test_lesson17_overrides_every_rung():
    lesson17 = experiment("lesson17")
    rung = lesson17.with_overrides(lesson17.RUNGS["batchnorm"], epochs=1, bs=None, lr=0.5)
    assert [s.epochs for s in rung.stages] == [1, 1] and (rung.bs, rung.lr) == (256, 0.5)
    assert rung.stages[1].lr == 0.05  # the continuation's own lr is kept
    assert lesson17.with_overrides(lesson17.RUNGS["kaiming"], None, None, None) == lesson17.RUNGS["kaiming"]


def test_fashion_mnist_quick_run(tmp_path, repository_untouched):
    proc = run("fashion_mnist", "--quick", "--no-progress", "--diagnose", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    results = strict_json(tmp_path / "results.json")
    assert (results["epochs"], results["n_train"], results["quick"]) == (1, 1024, True)
    # --diagnose: the training-health report, printed, in the results and in health.json
    assert "Training health:" in proc.stdout and results["health"]["seen"]["steps"] == 100
    assert strict_json(tmp_path / "health.json")["model"] == results["health"]
    assert 0.1 < results["test_accuracy"] <= 1 and (tmp_path / "loss.png").stat().st_size > 1000
    assert "it/s]" not in proc.stderr and "epochs:" not in proc.stderr  # no tqdm bars


def test_lesson17_quick_run_leaves_docs_alone(tmp_path, repository_untouched):
    proc = run("lesson17", "--quick", "--no-progress", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rows = strict_json(tmp_path / "results.json")
    assert [(r["rung"], r["epochs"], r["n_train"]) for r in rows] == [("batchnorm", 1, 1024),
                                                                      ("batchnorm_5ep", 2, 1024)]
    for name in ("README.md", "batchnorm_color_dim.png", "batchnorm_dead.png", "batchnorm_loss.png"):
        assert (tmp_path / name).exists()


def test_makemore_quick_run(tmp_path, repository_untouched):
    proc = run("makemore", "--quick", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rows = strict_json(tmp_path / "results.json")
    assert len(rows) == 6 and {r["steps"] for r in rows} == {1000}
    assert strict_json(tmp_path / "diagnostics.json") == {} and (tmp_path / "README.md").exists()
    # a smoke run cannot reach the lecture's numbers: it says so instead of marking every rung MISS
    assert "smoke run (--quick): not comparable to the lecture" in proc.stdout and "MISS" not in proc.stdout
    assert {r["within_tolerance"] for r in rows} == {None}


def test_a_diverged_run_exits_non_zero_without_results(tmp_path, repository_untouched):
    proc = run("fashion_mnist", "--quick", "--no-progress", "--lr", "1e9", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "diverged: training loss is nan at epoch 0 — lower the learning rate (--lr 1e+09)" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "results.json").exists()


def test_an_unwritable_out_fails_before_anything_runs():
    t0 = time.perf_counter()
    proc = run("fashion_mnist", "--out", "/proc/x")
    assert proc.returncode != 0 and time.perf_counter() - t0 < 20  # imports only: no data, no training
    assert "cannot write to the output folder /proc/x" in proc.stderr and "Traceback" not in proc.stderr
