"""The Learner's everyday callbacks (miniai's, one idea per class): the epoch table, progress bars, a one-batch
smoke test, input transforms inside the compiled step.

Per-batch numbers stay on the device as arrays until a callback needs them on the host (at the end of an
epoch or of the fit), so callbacks never stall the asynchronous dispatch of compiled steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from jaxlearn.callback import CancelFitException, Callback, LearnerLike, StepRecorder


class MetricsCB(Callback):
    """Keeps ``history`` (one row per epoch: train/valid loss and accuracy, seconds) and prints the table."""
    order = 1

    def __init__(self, show: bool = True):
        self.show = show

    def before_fit(self, learn: LearnerLike) -> None:
        # a fit resumed from a checkpoint starts from the rows the checkpoint kept
        self.history: list[dict] = [dict(r) for r in getattr(learn, "resumed_history", None) or []]
        learn.resumed_history = None
        self._printed_header = False

    def before_epoch(self, learn: LearnerLike) -> None:
        if learn.training or not self.history or "valid_loss" in self.history[-1]:
            self.history.append({"epoch": learn.epoch})
        self._t0 = time.perf_counter()

    def after_epoch(self, learn: LearnerLike) -> None:
        row, prefix = self.history[-1], "train" if learn.training else "valid"
        for k, v in learn.epoch_metrics.items():
            row[f"{prefix}_{k}"] = v
        row[f"{prefix}_seconds"] = time.perf_counter() - self._t0
        if not learn.training and self.show:
            self._print(learn, row)

    def after_fit(self, learn: LearnerLike) -> None:
        if self.show and self.history and "valid_loss" not in self.history[-1]:
            self._print(learn, self.history[-1])

    def _print(self, learn: LearnerLike, row: dict) -> None:
        cols = [k for k in row if not k.endswith("seconds")] + ["seconds"]
        if not self._printed_header:
            getattr(learn, "log", print)(" ".join(f"{c:>14}" for c in cols))
            self._printed_header = True
        seconds = row.get("train_seconds", 0.0) + row.get("valid_seconds", 0.0)
        values = [row[c] if c != "seconds" else seconds for c in cols]
        getattr(learn, "log", print)(" ".join(f"{v:>14.4f}" if isinstance(v, float) else f"{v:>14}"
                                              for v in values))


class ProgressCB(StepRecorder):
    """tqdm bars for epochs and batches; per-batch training losses kept (``losses``) and optionally plotted."""
    order = MetricsCB.order + 1

    def __init__(self, plot_path: str | Path | None = None, leave: bool = False):
        self.plot_path, self.leave = plot_path, leave
        self.epoch_bar = self.batch_bar = None

    def before_fit(self, learn: LearnerLike) -> None:
        super().before_fit(learn)
        from tqdm.auto import tqdm
        self._tqdm = tqdm
        self.epoch_bar = tqdm(total=learn.n_epochs, desc="epochs", leave=self.leave)
        learn.log = self.epoch_bar.write
        self.valid_losses: list[tuple[int, float]] = []
        self._n_train = 0

    def before_epoch(self, learn: LearnerLike) -> None:
        total = learn.dl.n_batches if learn.training else 1
        self.batch_bar = self._tqdm(total=total, desc="train" if learn.training else "valid", leave=False)

    def record(self, learn: LearnerLike) -> jax.Array:
        return learn.losses

    def after_batch(self, learn: LearnerLike) -> None:
        super().after_batch(learn)
        self.batch_bar.update(learn.n_steps if learn.training else 1)
        self._n_train += learn.n_steps if learn.training else 0

    def after_epoch(self, learn: LearnerLike) -> None:
        self.batch_bar.close()
        if learn.training:
            self.epoch_bar.update(1)
        else:
            self.valid_losses.append((self._n_train, learn.epoch_metrics["loss"]))

    @property
    def losses(self) -> np.ndarray:
        """Every training batch's loss so far (one device→host copy)."""
        out = self.recorded
        return np.zeros(0) if out is None else np.asarray(out)

    def cleanup_fit(self, learn: LearnerLike) -> None:
        for bar in (self.batch_bar, self.epoch_bar):
            if bar is not None:  # before_fit may not have run (an earlier callback failed)
                bar.close()
        learn.log = print
        if self.plot_path is not None and getattr(self, "_chunks", None):
            from jaxlearn.callbacks.plots import plot_losses
            plot_losses(self.losses, self.valid_losses, path=self.plot_path)


class SingleBatchCB(Callback):
    """Run one training call and stop: a quick check that everything is wired up."""
    order = 1

    def after_batch(self, learn: LearnerLike) -> None:
        raise CancelFitException()


class BatchTransformCB(Callback):
    """Apply ``tfm`` to the inputs inside the compiled step (e.g. ``data.normalize(0.28, 0.35)``)."""

    def __init__(self, tfm: Callable[[jax.Array], jax.Array], on_train: bool = True, on_val: bool = True):
        self.tfm, self.on_train, self.on_val = tfm, on_train, on_val

    @property
    def signature(self) -> tuple:
        return (type(self), self.tfm, self.on_train, self.on_val)

    def batch_transform(self, x: jax.Array, training: bool, key: jax.Array) -> jax.Array:
        return self.tfm(x) if (self.on_train if training else self.on_val) else x

