"""The flat modules of jaxlearn 0.1, kept importable for one release: ``import jaxlearn.norms`` still works,
warns (``DeprecationWarning``) and names the new home. Each old module is a stand-in whose attributes are
looked up in the modules its contents moved to. To be removed in 0.3."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

MOVED: dict[str, tuple[str, ...]] = {
    "jaxlearn.norms": ("jaxlearn.nn.norms", "jaxlearn.nn.calibrate"),
    "jaxlearn.layers": ("jaxlearn.nn.layers",),
    "jaxlearn.init": ("jaxlearn.nn.init",),
    "jaxlearn.conv": ("jaxlearn.nn.conv",),
    "jaxlearn.schedules": ("jaxlearn.optim.schedules",),
    "jaxlearn.stats": ("jaxlearn.callbacks.stats", "jaxlearn.trees"),
    "jaxlearn.plots": ("jaxlearn.callbacks.plots",),
    "jaxlearn.monitor": ("jaxlearn.callbacks.monitor", "jaxlearn.trees"),
    "jaxlearn.checkpoint": ("jaxlearn.callbacks.checkpoint", "jaxlearn.callbacks.checkpoint_files"),
    "jaxlearn.loggers": ("jaxlearn.callbacks.loggers",),
    "jaxlearn.snapshots": ("jaxlearn.callbacks.snapshots",),
    "jaxlearn.evaluation": ("jaxlearn.metrics",),
    "jaxlearn.models": ("jaxlearn.vision.models",),
    "jaxlearn.augment": ("jaxlearn.vision.augment",),
    "jaxlearn.movielens": ("jaxlearn.collab.movielens",),
    "jaxlearn.rnn": ("jaxlearn.text.models", "jaxlearn.text.cells", "jaxlearn.text.diagnostics",
                     "jaxlearn.text.sampling"),
}


class _Moved(types.ModuleType):
    """An old module: each attribute comes from the first new module that has it."""

    def __init__(self, name: str, homes: tuple[str, ...]):
        super().__init__(name, f"moved to {', '.join(homes)}")
        self._homes = homes

    def __getattr__(self, attr: str):
        for home in self._homes:
            module = importlib.import_module(home)
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(f"{self.__name__}.{attr} is gone: {self.__name__} moved to {', '.join(self._homes)}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        return importlib.machinery.ModuleSpec(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):
        homes = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {' and '.join(homes)} in jaxlearn 0.2; the old name goes in 0.3",
                      DeprecationWarning, stacklevel=3)
        return _Moved(spec.name, homes)

    def exec_module(self, module):
        pass


def install() -> None:
    """Make the old module paths of :data:`MOVED` importable (once; ``import jaxlearn`` calls it)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())  # before the path finders: a stale jaxlearn/norms.py must not win
