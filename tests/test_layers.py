"""GeneralRelu against its NumPy formula; plot_func draws f on a grid."""

import matplotlib

matplotlib.use("Agg")

import chex  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxlearn.callbacks.plots import plot_func
from jaxlearn.nn import GeneralRelu


def general_relu_np(x, leak, sub, maxv):
    y = np.where(x >= 0, x, x * (leak or 0.0))
    if sub is not None:
        y = y - sub
    if maxv is not None:
        y = np.minimum(y, maxv)
    return y


@pytest.mark.parametrize(
    "leak, sub, maxv",
    [(None, None, None), (0.1, 0.4, None), (0.1, 0.4, 6.0), (None, 0.5, 2.0), (0.2, None, None)],
)
def test_general_relu_formula(leak, sub, maxv):
    x = np.linspace(-7, 7, 141, dtype=np.float32).reshape(3, 47)
    layer = GeneralRelu(leak=leak, sub=sub, maxv=maxv)
    y = layer.apply({}, jnp.asarray(x))
    chex.assert_trees_all_close(y, general_relu_np(x, leak, sub, maxv), atol=1e-6)
    chex.assert_shape(y, x.shape)


def test_general_relu_has_no_params():
    assert GeneralRelu(0.1, 0.4).init({}, jnp.ones((2, 3))) == {}


def test_plot_func():
    f = lambda x: GeneralRelu(leak=0.1, sub=0.4).apply({}, x)  # noqa: E731
    fig, ax = plot_func(f, start=-2.0, end=3.0, steps=11)
    (line,) = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 11]
    chex.assert_trees_all_close(line.get_xdata(), np.linspace(-2, 3, 11, dtype=np.float32))
    chex.assert_trees_all_close(line.get_ydata(), general_relu_np(line.get_xdata(), 0.1, 0.4, None), atol=1e-6)
    plt.close(fig)

    fig2, ax2 = plt.subplots()
    assert plot_func(np.tanh, ax=ax2) == (fig2, ax2)  # draws into the given axes
    plt.close(fig2)
