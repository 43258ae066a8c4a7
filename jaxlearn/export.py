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
* ``export.json`` — what a person wants to read: the model's class, input shapes and dtypes, classes; and the
  sha256 of every other file of the export and of the record itself (format 2).

Writing is atomic: the export is written beside the folder and renamed in, so a failure midway leaves the
previous export whole; an existing folder is replaced only when it is a jaxlearn export and holds nothing
else (``SaveBestCB`` re-exports one at each improvement), or with ``overwrite=True``. ``load_learner`` checks
every checksum before unpickling or restoring anything, and names the file that changed (a flipped byte, a
truncated file, a file copied from another export). Format-1 exports (before checksums) still load, with a
warning that they are unverified.

As with fastai (pickle), only load exports you trust: unpickling runs code (the checksums catch damage, not
tampering).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import pickle
import shutil
import types
import warnings
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
from jaxlearn.predictions import Prediction, decode
from jaxlearn.step import TrainState, make_predict, predict_in_batches
from jaxlearn.train_flag import train_flag

__all__ = ["export", "load_learner", "InferenceLearner", "NotExported", "ExportError"]

FORMAT = 2  # 2: export.json holds the files' checksums, model.pkl the variables' structure
UNVERIFIED_FORMAT = 1  # written before checksums: loaded with a warning
MODEL_FILE, VARIABLES_DIR, META_FILE = "model.pkl", "variables", "export.json"
EXPORT_FILES = (META_FILE, MODEL_FILE, VARIABLES_DIR)


class ExportError(ValueError):
    """An export folder that cannot be written or read; the message names the folder or file and why."""


@dataclass(frozen=True)
class NotExported:
    """Stands in for a function that cannot be pickled (a local function or lambda).

    Called as an initializer, ``(key, shape, dtype)``, it returns zeros of that shape: flax calls a param's
    initializer during ``apply`` only to check the shape of the param it was given (the exported one). Any
    other call fails, naming the function (``name``: its module and qualified name).
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
    """What :func:`load_learner` returns: ``predict(x)`` as ``Learner.predict``, without any dataset.

    Made from the export: the flax ``model`` and its ``variables`` (``{'params': ..., 'model_state': ...}``), the
    dataset's ``transform`` and the Learner's ``input_transforms`` (the callbacks with a ``batch_transform``), an
    ``example`` of the inputs (zero-length arrays: per-example shapes and dtypes), the ``classes``, the
    ``compute_dtype`` and whether the model is a classifier (``classification``: predict decodes labels).
    """
    model: nn.Module
    variables: dict
    transform: Any
    input_transforms: list
    example: Any  # per-example shapes and dtypes of the training inputs (zero-length arrays)
    classes: list[str] | None = None
    compute_dtype: Any = None
    classification: bool = False  # predict decodes labels and probabilities
    _predict: Any = field(init=False, repr=False)

    def __post_init__(self):
        self.state = TrainState(step=jnp.zeros((), jnp.int32), params=self.variables["params"],
                                model_state=self.variables.get("model_state", {}), opt_state=(),
                                rng=jax.random.key(0), apply_fn=self.model.apply, tx=optax.identity(),
                                train_flag=train_flag(self.model))
        self._predict = make_predict(self.transform, callbacks_transform(self.input_transforms), self.compute_dtype)

    def predict(self, x: Any, batch_size: int = 1024, raw: bool = False) -> Prediction | np.ndarray:
        """As ``Learner.predict``: for raw inputs ``x`` like the training set's (a single example may omit the
        batch axis), run in batches of ``batch_size``, a classifier's ``label, index, probs``; other models'
        outputs, or all models' with ``raw=True``."""
        x, single = check_like(x, types.SimpleNamespace(x=self.example))
        out = predict_in_batches(self._predict, self.state, x, batch_size)
        out = out[0] if single else out
        return out if raw or not self.classification else decode(out, self.classes, single)


def _pickled_pipeline(learn: LearnerLike, variables: dict) -> bytes:
    ds = learn.dls.train
    payload = dict(
        # orbax restores tuples as lists (a stateful RNN's carry, which lax.scan then refuses): restore into this
        variables_like=jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), variables),
        model=learn.model, transform=learn.dls.valid.transform,
        input_transforms=[cb for cb in sorted(learn.callbacks, key=attrgetter("order"))
                          if hasattr(cb, "batch_transform")],
        example=jax.tree.map(lambda a: np.zeros((0, *a.shape[1:]), a.dtype), ds.x),
        classes=learn.dls.info.get("classes"), classification=bool(learn.classification),
        compute_dtype=None if learn.compute_dtype is None else jnp.dtype(learn.compute_dtype).name)
    buffer = io.BytesIO()
    _ExportPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(payload)
    return buffer.getvalue()


def _check_inference_runs(pipeline: bytes, variables: dict) -> None:
    """Trace the unpickled pipeline's predict (no computation): a stub it calls fails the export now."""
    payload = pickle.loads(pipeline)
    del payload["variables_like"]  # load_learner's restore target, not the predictor's
    restored = InferenceLearner(variables=variables, **payload)
    sample = jax.tree.map(lambda a: np.zeros((1, *a.shape[1:]), a.dtype), restored.example)
    try:
        jax.eval_shape(restored._predict, restored.state, sample)
    except RuntimeError as e:
        raise ExportError(f"cannot export this Learner: inference needs {e}") from e


def _file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _checksums(folder: Path) -> dict[str, str]:
    """The sha256 of each file of an export but its record, keyed by its path in the folder."""
    return {p.relative_to(folder).as_posix(): _file_digest(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p != folder / META_FILE}


def _record_checksum(record: dict) -> str:
    """The checksum of the record's own JSON (everything but this checksum), as a checkpoint's record's
    (:mod:`jaxlearn.callbacks.checkpoint_files`)."""
    body = {k: v for k, v in record.items() if k != "record_checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _is_export(folder: Path) -> bool:
    """Whether ``folder`` holds a jaxlearn export record (any format; its files may be damaged)."""
    try:
        record = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "format" in record and "jaxlearn" in record


def _listing(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _check_replaceable(path: Path, overwrite: bool) -> None:
    """Refuse to replace anything but an export (or an empty folder) unless ``overwrite``: it would be lost."""
    if overwrite or not (path.exists() or path.is_symlink()):
        return
    advice = "choose another path, or pass overwrite=True to replace it and everything in it"
    if not path.is_dir():
        raise ExportError(f"cannot export to {path}: it is a file, not a jaxlearn export; {advice}")
    names = sorted(p.name for p in path.iterdir())
    if names and not _is_export(path):
        why = f"its {META_FILE} is damaged or not jaxlearn's" if META_FILE in names else f"it has no {META_FILE}"
        raise ExportError(f"cannot export to {path}: the folder is not a jaxlearn export ({why}; it holds "
                          f"{_listing(names)}); {advice}")
    others = [n for n in names if n not in EXPORT_FILES]
    if others:
        raise ExportError(f"cannot export to {path}: besides a jaxlearn export the folder holds "
                          f"{_listing(others)}; {advice}")


def _write_variables(folder: Path, variables: dict) -> None:
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(folder, variables)
        checkpointer.wait_until_finished()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _move_in(staged: Path, path: Path) -> None:
    """Rename the finished export ``staged`` to ``path``; the previous one is set aside until then."""
    if not (path.exists() or path.is_symlink()):
        staged.rename(path)
        return
    previous = path.with_name(f"{path.name}.old-{os.getpid()}")
    path.rename(previous)
    try:
        staged.rename(path)
    except BaseException:
        previous.rename(path)
        raise
    _remove(previous)


def export(learn: LearnerLike, path: str | Path, overwrite: bool = False) -> Path:
    """fastai's ``learn.export`` (the Learner's method calls this): write what :func:`load_learner` needs to
    predict with the Learner ``learn`` to the folder ``path``: model definition and input pipeline (pickle),
    params and model state (orbax), and ``export.json`` with every file's sha256. An existing export there is
    replaced atomically; any other existing folder or file only with ``overwrite=True``. Returns the folder."""
    path = Path(path).absolute()
    _check_replaceable(path, overwrite)
    variables = jax.device_get({"params": learn.state.params, "model_state": learn.state.model_state})
    pipeline = _pickled_pipeline(learn, variables)
    _check_inference_runs(pipeline, variables)
    describe = lambda a: {"shape": list(a.shape[1:]), "dtype": str(a.dtype)}  # noqa: E731
    meta = dict(format=FORMAT, jaxlearn=__version__,
                model=f"{type(learn.model).__module__}.{type(learn.model).__qualname__}",
                inputs=[describe(a) for a in jax.tree.leaves(learn.dls.train.x)],
                classes=learn.dls.info.get("classes"), classification=bool(learn.classification),
                compute_dtype=None if learn.compute_dtype is None else jnp.dtype(learn.compute_dtype).name)
    staged = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    if staged.exists():  # left by a crashed export of a process with this id
        _remove(staged)
    try:
        staged.mkdir(parents=True)
        (staged / MODEL_FILE).write_bytes(pipeline)
        _write_variables(staged / VARIABLES_DIR, variables)
        meta["checksums"] = _checksums(staged)
        meta["record_checksum"] = _record_checksum(meta)
        (staged / META_FILE).write_text(json.dumps(meta, indent=1))
        _move_in(staged, path)
    except BaseException:
        if staged.exists():
            _remove(staged)
        raise
    return path


def _read_record(path: Path) -> dict:
    """``export.json``, checked: it parses, is a jaxlearn export record of a known format, matches its checksum."""
    file = path / META_FILE
    if not file.is_file():
        raise ExportError(f"no export at {path}: {file} does not exist")
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError) as e:  # ValueError: bytes that are not UTF-8, text that is not JSON
        raise ExportError(f"{file} is damaged: it does not parse as JSON ({e})") from e
    if not isinstance(record, dict) or "format" not in record:
        raise ExportError(f"{file} is damaged or not a jaxlearn export record: expected a JSON object with its "
                          f"format, got {type(record).__name__}")
    if record["format"] == UNVERIFIED_FORMAT:
        warnings.warn(f"{path} is an export of format {UNVERIFIED_FORMAT}, written without checksums: its files "
                      f"are unverified (export it again to add them)", stacklevel=3)
    elif record["format"] != FORMAT:
        raise ExportError(f"{path} is export format {record['format']}; this jaxlearn reads formats "
                          f"{UNVERIFIED_FORMAT} and {FORMAT}")
    elif record.get("record_checksum") != _record_checksum(record):
        raise ExportError(f"{file} is damaged: the record does not match the checksum saved in it")
    return record


def _verify_files(path: Path, checksums: dict[str, str]) -> None:
    """Every file the record lists is there with the same sha256 (before anything is unpickled or restored)."""
    bad = [f"{name} is missing" if not (path / name).is_file() else f"{name} does not match its checksum"
           for name, digest in checksums.items()
           if not (path / name).is_file() or _file_digest(path / name) != digest]
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise ExportError(f"export {path} is damaged: " + "; ".join(bad[:3]) + more + f" recorded in {META_FILE} "
                          f"(changed since it was written, or copied from another export)")


def load_learner(path: str | Path) -> InferenceLearner:
    """fastai's ``load_learner``: an :class:`InferenceLearner` from the folder ``path`` written by
    ``learn.export``, its files checked against the checksums recorded at export (:class:`ExportError` names a
    damaged one)."""
    path = Path(path).absolute()
    record = _read_record(path)
    _verify_files(path, record.get("checksums", {}))
    try:
        pipeline = pickle.loads((path / MODEL_FILE).read_bytes())
    except Exception as e:  # a format-1 export's damage surfaces here
        raise ExportError(f"{path / MODEL_FILE} cannot be unpickled ({type(e).__name__}: {e})") from e
    like = pipeline.pop("variables_like", None)  # format 1: none, tuples come back as lists
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            variables = checkpointer.restore(path / VARIABLES_DIR, like)
    except Exception as e:
        raise ExportError(f"{path / VARIABLES_DIR} cannot be restored ({type(e).__name__}: {e})") from e
    return InferenceLearner(variables=jax.tree.map(jnp.asarray, dict(variables)), **pipeline)
