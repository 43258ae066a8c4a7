"""Shared fixtures. Fashion-MNIST comes from $JAXLEARN_FASHION_MNIST_DIR (offline) or a tfds download.
The experiment scripts' shared module, experiments/runs.py, is importable as ``runs``."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

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
