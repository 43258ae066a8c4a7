"""Output a reader can follow: TensorFlow says nothing when Fashion-MNIST is prepared, progress bars stay out of
log files (the epoch table alone goes there), and an experiment given bad input prints one line and exits 2
(``--debug`` for the traceback)."""

import io
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import optax
import pytest

import runs
from jaxlearn.callbacks.core import MetricsCB, ProgressCB, bars_can_redraw
from jaxlearn.data import FASHION_MNIST_ENV, DataFileError, DataLoaders
from jaxlearn.learner import Learner

ROOT = Path(__file__).resolve().parents[1]


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def fit_with_progress(tiny_data, **progress) -> None:
    x, y = tiny_data
    learn = Learner(Tiny(), DataLoaders.from_arrays((x, y), (x, y), 32), optimizer=optax.sgd, lr=0.1,
                    callbacks=[MetricsCB()])
    learn.fit(1, callbacks=[ProgressCB(**progress)])


def test_bars_redraw_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not bars_can_redraw()
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert bars_can_redraw()


def test_a_log_file_gets_the_epoch_table_without_bars(tiny_data, capsys):
    fit_with_progress(tiny_data)  # pytest's captured stderr is no terminal, like a log file
    out, err = capsys.readouterr()
    assert "train_loss" in out and len(out.strip().splitlines()) == 2  # the header and epoch 0's row
    assert "epochs" not in err and "\r" not in err
    fit_with_progress(tiny_data, show_bars=True)  # forced, as a notebook or a terminal gets them
    out, err = capsys.readouterr()
    assert "epochs" in err and "train_loss" in out


def test_a_bad_input_error_is_one_line_and_exit_status_2(capsys):
    @runs.exit_on_run_error
    def main(argv=None):
        raise DataFileError("missing data file /nonexistent/train.gz:\n  expected the official IDX file")

    with pytest.raises(SystemExit) as stop:
        main(["--quick"])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err == "error: missing data file /nonexistent/train.gz: expected the official IDX file " \
                  "(--debug shows the traceback)\n"
    with pytest.raises(DataFileError, match="missing data file"):  # --debug: the error itself, traceback and all
        main(["--quick", "--debug"])


def test_the_cli_names_a_missing_data_folder_in_one_line(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", FASHION_MNIST_ENV: "/nonexistent"}
    proc = subprocess.run([sys.executable, "experiments/fashion_mnist.py", "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: missing data file /nonexistent/") and FASHION_MNIST_ENV in lines[0]


@pytest.mark.skipif(FASHION_MNIST_ENV not in os.environ, reason=f"set {FASHION_MNIST_ENV} to the IDX files")
@pytest.mark.parametrize("own_level", [None, "0"])
def test_tensorflow_prints_no_onednn_banner_and_a_users_setting_wins(own_level):
    pytest.importorskip("tensorflow_datasets")
    code = ("import os\n"
            "from jaxlearn.data import fashion_mnist\n"
            "fashion_mnist(use_tfds=False)\n"  # sets TensorFlow's variables, then reads the IDX files
            "import tensorflow\n"
            "print(os.environ['TF_CPP_MIN_LOG_LEVEL'], os.environ['TF_ENABLE_ONEDNN_OPTS'])\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    if own_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = own_level
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "oneDNN custom operations are on" not in proc.stderr, proc.stderr
    if own_level is None:  # nothing at all from TensorFlow's C++ logging
        assert "I0000" not in proc.stderr and "absl::InitializeLog" not in proc.stderr, proc.stderr
    assert proc.stdout.split() == [own_level or "1", "0"]  # a level the user set is kept (0: its INFO lines)
