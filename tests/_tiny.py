"""The tests' tiny learnable dataset, importable where a fixture cannot reach (module fixtures, subprocesses)."""

import numpy as np


def tiny_arrays(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n random 4×4 'images' with 3 classes whose label is readable from the pixels (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype(np.int32)
    x = (rng.random((n, 4, 4, 1)) * 60 + y[:, None, None, None] * 80).astype(np.uint8)
    return x, y
