"""Shared fixtures. Fashion-MNIST comes from $JAXLEARN_FASHION_MNIST_DIR (offline) or a tfds download."""

import pytest

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
