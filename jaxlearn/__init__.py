"""jaxlearn: see inside training with JAX, Flax (linen) and optax."""

__version__ = "0.1.0"

# The modules that attach fastai's shortcuts to the Learner (``@patch``): ``fit_one_cycle`` and ``lr_find``
# (callbacks), ``summary`` and ``show_results`` (interpret), ``export`` (export). Imported here so that any
# ``from jaxlearn.learner import Learner`` has them.
from jaxlearn import callbacks, export, interpret  # noqa: E402,F401
