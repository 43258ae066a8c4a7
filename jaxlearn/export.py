"""Inference without the training data: fastai's ``learn.export(path)`` and ``load_learner(path)``.

An export is a folder:

* ``model.pkl`` — the model definition and the input pipeline, pickled: the flax module (a dataclass: its
  class and constructor fields, e.g. ``partial(GeneralRelu, leak=0.1)``), the dataset's transform (uint8 →
  float), the Learner's input-transform callbacks (e.g. ``BatchTransformCB(normalize(0.28, 0.35))``), the
  per-example input shapes and dtypes, and the compute dtype. Functions pickle by their importable name; a
  local function or lambda held by the model (an initializer such as ``kaiming_normal(a=0.1)``: at inference
  flax only checks shapes with it) is replaced by a :class:`NotExported` stub, and the export is refused when
  inference needs one for anything else, naming it.
* ``variables/`` — params and model state (BatchNorm running statistics), an orbax checkpoint.
* ``export.json`` — what a person wants to read: the model's class, input shapes and dtypes, classes.

As with fastai (pickle), only load exports you trust: unpickling runs code.
"""

from __future__ import annotations

import importlib
import io
import json
import pickle
import shutil
import types
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from jaxlearn import __version__
from jaxlearn.callback import LearnerLike
from jaxlearn.calls import callbacks_transform
from jaxlearn.data import check_like
from jaxlearn.step import TrainState, make_predict, predict_in_batches, takes_train_flag

__all__ = ["export", "load_learner", "InferenceLearner", "NotExported"]

FORMAT = 1
MODEL_FILE, VARIABLES_DIR, META_FILE = "model.pkl", "variables", "export.json"


@dataclass(frozen=True)
class NotExported:
    """Stands in for a function that cannot be pickled (a local function or lambda).

    Called as an initializer, ``(key, shape, dtype)``, it returns zeros of that shape: flax calls a param's
    initializer during ``apply`` only to check the shape of the param it was given (the exported one). Any
    other call fails, naming the function.
    """
    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) >= 2 and isinstance(args[1], (tuple, list)) and all(isinstance(d, int) for d in args[1]):
            return jnp.zeros(args[1], args[2] if len(args) > 2 else kwargs.get("dtype", jnp.float32))
        raise RuntimeError(f"{self.name} was not exported (a local function or lambda cannot be pickled): define "
                           f"it at module level to use it after load_learner")


def _importable(f: types.FunctionType) -> bool:
    try:
        return attrgetter(f.__qualname__)(importlib.import_module(f.__module__)) is f
    except Exception:  # a local function (``<locals>`` in its name), a lambda, a module that is gone
        return False


class _ExportPickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.FunctionType) and not _importable(obj):
            return NotExported, (f"{obj.__module__}.{obj.__qualname__}",)
        return NotImplemented


@dataclass
class InferenceLearner:
    """What :func:`load_learner` returns: ``predict(x)`` as ``Learner.predict``, without any dataset."""
    model: nn.Module
    variables: dict
    transform: Any
    input_transforms: list
    example: Any  # per-example shapes and dtypes of the training inputs (zero-length arrays)
    classes: list[str] | None = None
    compute_dtype: Any = None
    _predict: Any = field(init=False, repr=False)

    def __post_init__(self):
        self.state = TrainState(step=jnp.zeros((), jnp.int32), params=self.variables["params"],
                                model_state=self.variables.get("model_state", {}), opt_state=(),
                                rng=jax.random.key(0), apply_fn=self.model.apply, tx=optax.identity(),
                                takes_train=takes_train_flag(self.model))
        self._predict = make_predict(self.transform, callbacks_transform(self.input_transforms), self.compute_dtype)

    def predict(self, x: Any, batch_size: int = 1024) -> np.ndarray:
        """Model outputs for raw inputs like the training set's (a single example may omit the batch axis)."""
        x, single = check_like(x, types.SimpleNamespace(x=self.example))
        out = predict_in_batches(self._predict, self.state, x, batch_size)
        return out[0] if single else out


def _pickled_pipeline(learn: LearnerLike) -> bytes:
    ds = learn.dls.train
    payload = dict(
        model=learn.model, transform=learn.dls.valid.transform,
        input_transforms=[cb for cb in sorted(learn.callbacks, key=attrgetter("order"))
                          if hasattr(cb, "batch_transform")],
        example=jax.tree.map(lambda a: np.zeros((0, *a.shape[1:]), a.dtype), ds.x),
        classes=learn.dls.info.get("classes"),
        compute_dtype=None if learn.compute_dtype is None else jnp.dtype(learn.compute_dtype).name)
    buffer = io.BytesIO()
    _ExportPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(payload)
    return buffer.getvalue()


def _check_inference_runs(pipeline: bytes, variables: dict) -> None:
    """Trace the unpickled pipeline's predict (no computation): a stub it calls fails the export now."""
    restored = InferenceLearner(variables=variables, **pickle.loads(pipeline))
    sample = jax.tree.map(lambda a: np.zeros((1, *a.shape[1:]), a.dtype), restored.example)
    try:
        jax.eval_shape(restored._predict, restored.state, sample)
    except RuntimeError as e:
        raise ValueError(f"cannot export this Learner: inference needs {e}") from e


def export(learn: LearnerLike, path: str | Path) -> Path:
    """fastai's ``learn.export`` (the Learner's method calls this): write what :func:`load_learner` needs to
    predict to the folder ``path`` (replaced if it exists): model definition and input pipeline (pickle), params
    and model state (orbax), and ``export.json``. Returns the folder."""
    path = Path(path).absolute()
    variables = jax.device_get({"params": learn.state.params, "model_state": learn.state.model_state})
    pipeline = _pickled_pipeline(learn)
    _check_inference_runs(pipeline, variables)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MODEL_FILE).write_bytes(pipeline)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path / VARIABLES_DIR, variables)
        checkpointer.wait_until_finished()
    describe = lambda a: {"shape": list(a.shape[1:]), "dtype": str(a.dtype)}  # noqa: E731
    meta = dict(format=FORMAT, jaxlearn=__version__,
                model=f"{type(learn.model).__module__}.{type(learn.model).__qualname__}",
                inputs=[describe(a) for a in jax.tree.leaves(learn.dls.train.x)],
                classes=learn.dls.info.get("classes"),
                compute_dtype=None if learn.compute_dtype is None else jnp.dtype(learn.compute_dtype).name)
    (path / META_FILE).write_text(json.dumps(meta, indent=1))
    return path


def load_learner(path: str | Path) -> InferenceLearner:
    """fastai's ``load_learner``: an :class:`InferenceLearner` from a folder written by ``learn.export``."""
    path = Path(path).absolute()
    meta = json.loads((path / META_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is export format {meta.get('format')}; this jaxlearn reads format {FORMAT}")
    pipeline = pickle.loads((path / MODEL_FILE).read_bytes())
    with ocp.StandardCheckpointer() as checkpointer:
        variables = checkpointer.restore(path / VARIABLES_DIR)
    return InferenceLearner(variables=jax.tree.map(jnp.asarray, dict(variables)), **pipeline)
