"""Metrics to files: one row per epoch as JSON lines or CSV, (optionally) TensorBoard via tensorboardX, and
strict JSON (:func:`strict_dumps`, :func:`write_json`) for every file jaxlearn writes.

(Named ``loggers`` so that it does not shadow the standard library's ``logging``.)

A row holds the epoch (``epoch``: index in the fit, ``epochs_done``: over all fits, ``step``: optimizer
steps), the training pass's and the validation pass's ``learn.epoch_metrics`` as ``train_loss``,
``train_accuracy``, ``valid_loss``, ..., the learning rate when the optimizer has an injected one, the
epoch's seconds and the wall-clock time. Rows are flushed as they are written, so an interrupted run keeps
every finished epoch; a run resumed from a checkpoint drops the rows past the checkpoint and appends.
Under multi-process training only process 0 writes. JSON lines are strict JSON: a NaN or infinite metric (a
diverged epoch) is written as null and named under the row's ``non_finite`` (:func:`strict_dumps`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxlearn.callback import Callback, LearnerLike

__all__ = ["MetricsLoggerCB", "TensorBoardCB", "read_metrics", "strict_dumps", "write_json", "NON_FINITE_KEY"]

NON_FINITE_KEY = "non_finite"  # where strict JSON records the non-finite values it wrote as null
"""The key under which strict JSON (:func:`strict_dumps`) records the non-finite values it wrote as null."""


def _epoch_row(learn: LearnerLike, passes: dict[str, dict[str, float]], seconds: float) -> dict:
    row = {"epoch": int(learn.epoch), "epochs_done": int(learn.epochs_done),
           "step": int(np.asarray(jax.device_get(learn.state.step)))}
    for prefix, metrics in passes.items():
        row.update({f"{prefix}_{k}": float(v) for k, v in metrics.items()})
    try:
        row["lr"] = learn.get_hyper("learning_rate")
    except (KeyError, ValueError, TypeError):
        pass
    row["seconds"] = seconds
    row["time"] = time.time()
    return row


class _EpochRows(Callback):
    """Collects the training and validation passes of each epoch into one row, then calls ``write``."""
    order = 80  # after MetricsCB / ProgressCB, before CheckpointCB (90): a checkpointed epoch is logged

    def before_fit(self, learn: LearnerLike) -> None:
        self._passes: dict[str, dict[str, float]] = {}
        self._writer = jax.process_index() == 0

    def before_epoch(self, learn: LearnerLike) -> None:
        if learn.training or not self._passes:
            self._t0 = time.perf_counter()

    def after_epoch(self, learn: LearnerLike) -> None:
        self._passes["train" if learn.training else "valid"] = dict(learn.epoch_metrics)
        if learn.epoch_complete:
            row = _epoch_row(learn, self._passes, time.perf_counter() - self._t0)
            self._passes = {}
            if self._writer:
                self.write(learn, row)

    def write(self, learn: LearnerLike, row: dict) -> None:
        """Write one epoch's ``row`` (on process 0 only), the epoch of ``learn`` just finished."""
        raise NotImplementedError


class MetricsLoggerCB(_EpochRows):
    """Write one row per epoch to ``path``: ``format='jsonl'`` (one JSON object a line) or ``'csv'``.

    ``format=None`` picks from the suffix (``.csv`` → CSV, otherwise JSON lines). The file starts afresh
    at the first fit that uses this callback and is appended to by later fits; ``append=True`` always
    appends. A fit resumed from a checkpoint (``CheckpointCB(..., resume=True)``) keeps the rows up to the
    checkpoint's epoch, drops later ones (they will be trained again), and appends. ``rows`` holds the rows
    written (all fits); :func:`read_metrics` reads the file back.
    """

    def __init__(self, path: str | os.PathLike, format: str | None = None, append: bool = False):
        self.path = Path(path)
        format = format or ("csv" if self.path.suffix.lower() == ".csv" else "jsonl")
        if format not in ("jsonl", "csv"):
            raise ValueError(f"format must be 'jsonl' or 'csv', got {format!r}")
        self.format, self.append, self._started = format, append, False
        self.rows: list[dict] = []  # the rows this callback wrote (all fits)

    def before_fit(self, learn: LearnerLike) -> None:
        """Start the file afresh (first fit, unless ``append``), or after a resume keep the rows up to the
        checkpoint's epoch."""
        super().before_fit(learn)
        if not self._writer:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if getattr(learn, "resumed_from", None) is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if int(r.get("epochs_done", 0)) <= learn.epochs_done]
            self._rewrite(kept)
        elif not (self.append or self._started) or not self.path.exists():
            self._rewrite([])
        self._started = True

    def write(self, learn: LearnerLike, row: dict) -> None:
        """Append ``row`` to the file (a CSV file is rewritten when the row brings new columns)."""
        self.rows.append(row)
        if self.format == "jsonl":
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(_json_line(row))
            return
        header = self._csv_header()
        if header is not None and set(row) <= set(header):
            with open(self.path, "a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, header).writerow(row)
        else:  # first row, or new columns (e.g. a fit with validation after one without): rewrite the file
            self._rewrite(read_metrics(self.path) + [row])

    def _csv_header(self) -> list[str] | None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return None
        with open(self.path, newline="", encoding="utf-8") as f:
            return next(csv.reader(f), None)

    def _rewrite(self, rows: list[dict]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            if self.format == "jsonl":
                f.writelines(_json_line(r) for r in rows)
            elif rows:
                header = list(dict.fromkeys(k for r in rows for k in r))
                writer = csv.DictWriter(f, header)
                writer.writeheader()
                writer.writerows(rows)
        os.replace(tmp, self.path)  # a crash mid-rewrite leaves the old file


def _json_line(row: dict) -> str:
    """One row as a line of strict JSON (non-finite metrics as null, named under ``non_finite``)."""
    return strict_dumps(row)[0] + "\n"


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of the :class:`MetricsLoggerCB` file at ``path`` (JSON lines or CSV; CSV numbers parsed back;
    [] when there is no file)."""
    path = Path(path)
    if not path.exists():
        return []
    if path.suffix.lower() != ".csv" and path.read_text(encoding="utf-8")[:1] in ("{", ""):
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _number(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


class TensorBoardCB(_EpochRows):
    """Scalars for TensorBoard via tensorboardX (``pip install 'jaxlearn[tensorboard]'``).

    Per epoch, at the optimizer step: ``train/loss``, ``valid/loss``, ``train/accuracy``, ... and ``lr``;
    per training batch (copied from the device once per epoch, unless ``batch_loss=False``):
    ``train/batch_loss``. Written to the folder ``logdir``.
    """

    def __init__(self, logdir: str | os.PathLike, batch_loss: bool = True):
        self.logdir, self.batch_loss = Path(logdir), batch_loss

    def before_fit(self, learn: LearnerLike) -> None:
        """Open the TensorBoard writer (process 0; tensorboardX is imported here)."""
        super().before_fit(learn)
        self._losses: list = []
        self._step0 = int(np.asarray(jax.device_get(learn.state.step)))
        if not self._writer:
            return
        try:
            from tensorboardX import SummaryWriter
        except ImportError as e:
            raise ImportError("TensorBoardCB needs tensorboardX: pip install 'jaxlearn[tensorboard]' "
                              "(or pip install tensorboardX)") from e
        self.writer = SummaryWriter(str(self.logdir))

    def before_batch(self, learn: LearnerLike) -> None:
        """Note the optimizer step of the epoch's first training call (the x of its batch losses)."""
        if learn.training and not self._losses:
            self._step0 = int(np.asarray(jax.device_get(learn.state.step)))

    def after_batch(self, learn: LearnerLike) -> None:
        """Keep the training call's per-batch losses (on the device) until the epoch's row is written."""
        if learn.training and self.batch_loss:
            self._losses.append(learn.losses)

    def write(self, learn: LearnerLike, row: dict) -> None:
        """The epoch's ``row`` as scalars at its optimizer step, then the epoch's finite batch losses."""
        step = row["step"]
        for k, v in row.items():
            if k.startswith(("train_", "valid_")) and not k.endswith("seconds"):
                prefix, name = k.split("_", 1)
                self.writer.add_scalar(f"{prefix}/{name}", v, step)
        if "lr" in row:
            self.writer.add_scalar("lr", row["lr"], step)
        if self._losses:
            losses = np.concatenate([np.asarray(jax.device_get(l)).reshape(-1) for l in self._losses])
            for i, v in enumerate(losses):
                if math.isfinite(v):
                    self.writer.add_scalar("train/batch_loss", float(v), self._step0 + i + 1)
            self._losses = []
        self.writer.flush()

    def cleanup_fit(self, learn: LearnerLike) -> None:
        """Close the writer, however the fit ends."""
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.close()
            self.writer = None


def _plain(value: Any, key: str, record: dict[str, str], converted: list[str], where: str) -> Any:
    """``value`` in JSON's types, each non-finite float as None: its path inside the nearest enclosing
    object goes into that object's ``record`` (``key`` is that path so far), its path from the top into
    ``converted``."""
    if hasattr(value, "__array__") and not isinstance(value, (str, bytes)):  # numpy / jax scalars and arrays
        array = np.asarray(value)
        value = array.item() if array.ndim == 0 else array.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        record[key] = str(value)  # 'nan', 'inf' or '-inf'
        converted.append(where or "(top)")
        return None
    if isinstance(value, Mapping):
        own: dict[str, str] = {}
        out = {str(k): _plain(v, str(k), own, converted, f"{where}.{k}" if where else str(k))
               for k, v in value.items()}
        if own:
            if NON_FINITE_KEY in out:
                raise ValueError(f"cannot record non-finite values: {where or 'the object'} already has a "
                                 f"{NON_FINITE_KEY!r} key")
            out[NON_FINITE_KEY] = own
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]", record, converted, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def strict_dumps(obj: Any, indent: int | None = None) -> tuple[str, list[str]]:
    """``obj`` as strict JSON text (RFC 8259: no NaN or Infinity, which most JSON parsers reject) and the
    paths of the non-finite floats written as null; ``indent`` as ``json.dumps``'s.

    Each such null is recorded, so nothing is silently lost, under ``"non_finite"`` in its nearest enclosing
    object: ``{"steps": null, "non_finite": {"steps": "inf"}}``; ``{"losses": [1.2, null],
    "non_finite": {"losses[1]": "nan"}}`` (a top-level list has no such object: only the returned paths name
    them). numpy and jax numbers and arrays become plain numbers and lists.
    """
    converted: list[str] = []
    plain = _plain(obj, "", {}, converted, "")
    return json.dumps(plain, indent=indent, allow_nan=False), converted


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` to ``path`` as strict JSON (:func:`strict_dumps`, ``indent``), warning about every non-finite value
    written as null. Written to a temporary file and renamed: an interrupted write leaves the old file."""
    path = Path(path)
    text, converted = strict_dumps(obj, indent)
    if converted:
        warnings.warn(f"{path}: non-finite values written as null (recorded under {NON_FINITE_KEY!r}): "
                      + ", ".join(converted), RuntimeWarning, stacklevel=2)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path

