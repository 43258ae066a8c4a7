"""How a model hears that it is training: the flag its ``__call__`` takes, under any of the usual names.

jaxlearn's and fastai's modules take ``train``; Keras-style code takes ``training`` (Haiku: ``is_training``);
flax's own layers take ``deterministic`` (the opposite sense). A module whose flag went unrecognised would
silently run its dropout in eval mode during training, so a boolean argument of another name gets a warning
when the Learner is built.
"""

from __future__ import annotations

import inspect
import warnings
import flax.linen as nn

# the flag's name -> the value it takes while training; the first one a model takes is the one passed
TRAIN_FLAGS = {"train": True, "training": True, "is_training": True, "deterministic": False}


def _call_parameters(model: nn.Module) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(type(model).__call__).parameters)


def train_flag(model: nn.Module) -> str | None:
    """The name of the train flag ``model.__call__`` takes (a key of :data:`TRAIN_FLAGS`), or None."""
    params = _call_parameters(model)
    return next((name for name in TRAIN_FLAGS if name in params), None)


def train_kwargs(flag: str | None, train: bool) -> dict[str, bool]:
    """The keyword arguments telling a model with train flag ``flag`` whether it is training."""
    return {} if flag is None else {flag: train if TRAIN_FLAGS[flag] else not train}


def warn_unknown_flags(model: nn.Module) -> None:
    """Warn when ``model`` takes no recognised train flag but has boolean arguments: one of them may switch
    dropout or BatchNorm, and jaxlearn would never set it."""
    if train_flag(model) is not None:
        return
    flags = [name for name, p in _call_parameters(model).items()
             if isinstance(p.default, bool) or p.annotation in (bool, "bool", "bool | None")]
    if flags:
        warnings.warn(f"{type(model).__name__}.__call__ takes {', '.join(map(repr, flags))} but none of "
                      f"{', '.join(TRAIN_FLAGS)}: jaxlearn passes the train flag under those names only, so if "
                      f"{flags[0]!r} switches dropout or BatchNorm it stays at its default while training; rename "
                      f"it (train=True while training, or deterministic=False)", stacklevel=4)

