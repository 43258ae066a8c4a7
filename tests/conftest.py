"""Shared fixtures. Fashion-MNIST comes from $JAXLEARN_FASHION_MNIST_DIR (offline) or a tfds download.
The experiment scripts' shared module, experiments/runs.py, is importable as ``runs``."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

# One XLA compilation cache for the run, set before jax is imported: the suite compiles the same small programs
# again and again (the same tiny model in a new Learner, an experiment's subprocess, a notebook's kernel), and
# the cache, keyed by the program, compiles each once. The xdist workers and every subprocess inherit it. A new
# folder each run (removed at its end), so every run compiles what it tests; a JAX_COMPILATION_CACHE_DIR of
# your own is used as it is.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxlearn-tests-xla-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The tests' programs are small and run few steps: LLVM's optimizations cost more compile time than they save (a
# quarter of the compile-bound tests' time). Only the CPU backend's code generation: the HLO that the compiler-
# specific tests inspect is the same. Set JAXLEARN_TEST_XLA_OPT=1 to test the optimized code users run.
if os.environ.get("JAXLEARN_TEST_XLA_OPT") != "1" and "xla_backend_optimization_level" not in os.environ.get(
        "XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

from _tiny import tiny_arrays


@pytest.fixture(scope="session")
def fashion():
    from jaxlearn.data import fashion_mnist
    return fashion_mnist()


@pytest.fixture(scope="session")
def fashion_small(fashion):
    """2,000 training and 1,000 test images: enough to see learning in seconds."""
    (x, y), (xt, yt) = fashion["train"], fashion["test"]
    return (x[:2000], y[:2000]), (xt[:1000], yt[:1000])


import tqdm  # noqa: E402

_TQDM_DISABLE = os.environ.get("TQDM_DISABLE")  # as the run started
_TQDM_INIT = tqdm.tqdm.__init__


def _restore_progress_bars() -> None:
    if _TQDM_DISABLE is None:
        os.environ.pop("TQDM_DISABLE", None)
    else:
        os.environ["TQDM_DISABLE"] = _TQDM_DISABLE
    tqdm.tqdm.__init__ = _TQDM_INIT


@pytest.fixture(autouse=True)
def progress_bars_as_they_were():
    """An experiment's ``--no-progress``, run in the test process (by a test or a module's fixture), turns tqdm off
    for the whole process (TQDM_DISABLE, and tqdm's default): every test starts and ends with both as the run
    started."""
    _restore_progress_bars()
    yield
    _restore_progress_bars()


@pytest.fixture
def tiny_data():
    """96 random 'images' with 3 classes whose label is readable from the pixels (learnable in a few steps)."""
    return tiny_arrays()


MEASURED_JAXLIB = "0.10.2"  # the jaxlib the compiler-specific tests were measured on (the pinned one)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``compiler_specific`` pin what XLA's compiler does with our code (less work with a fusion
    fence, say): on another jaxlib they still run, reported as xfail / xpass instead of failing the suite, so an
    upgrade shows which measurements to redo."""
    import jaxlib
    if jaxlib.__version__ == MEASURED_JAXLIB:
        return
    mark = pytest.mark.xfail(reason=f"measured on jaxlib {MEASURED_JAXLIB}, this is {jaxlib.__version__}",
                             strict=False)
    for item in items:
        if "compiler_specific" in item.keywords:
            item.add_marker(mark)


def pytest_unconfigure(config):
    """The run's compilation cache goes with the run (the process that made it removes it)."""
    if _OWN_CACHE and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
