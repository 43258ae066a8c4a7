"""Shared fixtures. Fashion-MNIST comes from $JAXLEARN_FASHION_MNIST_DIR (offline) or a tfds download."""

import numpy as np
import pytest


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
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 96).astype(np.int32)
    x = (rng.random((96, 4, 4, 1)) * 60 + y[:, None, None, None] * 80).astype(np.uint8)
    return x, y
