"""The Learner's everyday callbacks (miniai's, one idea per class).

Per-batch numbers stay on the device as arrays until a callback needs them on the host (at the end of an
epoch or of the fit), so callbacks never stall the asynchronous dispatch of compiled steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn.learner import CancelFitException, Callback, Learner

__all__ = ["Callback", "MetricsCB", "ProgressCB", "SingleBatchCB", "BatchTransformCB", "ParamSchedulerCB",
           "RecorderCB"]


class MetricsCB(Callback):
    """Keeps ``history`` (one row per epoch: train/valid loss and accuracy, seconds) and prints the table."""
    order = 1

    def __init__(self, show: bool = True):
        self.show = show

    def before_fit(self, learn: Learner) -> None:
        self.history: list[dict] = []
        self._printed_header = False

    def before_epoch(self, learn: Learner) -> None:
        if learn.training or not self.history or "valid_loss" in self.history[-1]:
            self.history.append({"epoch": learn.epoch})
        self._t0 = time.perf_counter()

    def after_epoch(self, learn: Learner) -> None:
        row, prefix = self.history[-1], "train" if learn.training else "valid"
        for k, v in learn.epoch_metrics.items():
            row[f"{prefix}_{k}"] = v
        row[f"{prefix}_seconds"] = time.perf_counter() - self._t0
        if not learn.training and self.show:
            self._print(learn, row)

    def after_fit(self, learn: Learner) -> None:
        if self.show and self.history and "valid_loss" not in self.history[-1]:
            self._print(learn, self.history[-1])

    def _print(self, learn: Learner, row: dict) -> None:
        cols = [k for k in row if not k.endswith("seconds")] + ["seconds"]
        if not self._printed_header:
            getattr(learn, "log", print)(" ".join(f"{c:>14}" for c in cols))
            self._printed_header = True
        seconds = row.get("train_seconds", 0.0) + row.get("valid_seconds", 0.0)
        values = [row[c] if c != "seconds" else seconds for c in cols]
        getattr(learn, "log", print)(" ".join(f"{v:>14.4f}" if isinstance(v, float) else f"{v:>14}"
                                              for v in values))


class ProgressCB(Callback):
    """tqdm bars for epochs and batches; per-batch training losses kept (``losses``) and optionally plotted."""
    order = MetricsCB.order + 1

    def __init__(self, plot_path: str | Path | None = None, leave: bool = False):
        self.plot_path, self.leave = plot_path, leave

    def before_fit(self, learn: Learner) -> None:
        from tqdm.auto import tqdm
        self._tqdm = tqdm
        self.epoch_bar = tqdm(total=learn.n_epochs, desc="epochs", leave=self.leave)
        learn.log = self.epoch_bar.write
        self._chunks: list[jax.Array] = []
        self.valid_losses: list[tuple[int, float]] = []

    def before_epoch(self, learn: Learner) -> None:
        total = learn.dl.n_batches if learn.training else 1
        self.batch_bar = self._tqdm(total=total, desc="train" if learn.training else "valid", leave=False)

    def after_batch(self, learn: Learner) -> None:
        self.batch_bar.update(learn.n_steps if learn.training else 1)
        if learn.training:
            self._chunks.append(learn.loss)

    def after_epoch(self, learn: Learner) -> None:
        self.batch_bar.close()
        if learn.training:
            self.epoch_bar.update(1)
        else:
            self.valid_losses.append((len(self.losses), learn.epoch_metrics["loss"]))

    @property
    def losses(self) -> np.ndarray:
        """Every training batch's loss so far (one device→host copy)."""
        return np.asarray(jnp.concatenate(self._chunks)) if self._chunks else np.zeros(0)

    def cleanup_fit(self, learn: Learner) -> None:
        self.epoch_bar.close()
        learn.log = print
        if self.plot_path is not None and self._chunks:
            from jaxlearn.plots import plot_losses
            plot_losses(self.losses, self.valid_losses, path=self.plot_path)


class SingleBatchCB(Callback):
    """Run one training call and stop: a quick check that everything is wired up."""
    order = 1

    def after_batch(self, learn: Learner) -> None:
        raise CancelFitException()


class BatchTransformCB(Callback):
    """Apply ``tfm`` to the inputs inside the compiled step (e.g. ``data.normalize(0.28, 0.35)``)."""

    def __init__(self, tfm: Callable[[jax.Array], jax.Array], on_train: bool = True, on_val: bool = True):
        self.tfm, self.on_train, self.on_val = tfm, on_train, on_val

    def batch_transform(self, x: jax.Array, training: bool) -> jax.Array:
        return self.tfm(x) if (self.on_train if training else self.on_val) else x


class ParamSchedulerCB(Callback):
    """Set an injected hyperparameter before each training call from a schedule over the fit's steps.

    ``make_schedule(total_steps)`` returns ``schedule(step) -> value`` (any optax schedule, or one from
    ``jaxlearn.schedules``); only the hyperparameter's value changes, so nothing is recompiled.
    """

    def __init__(self, name: str, make_schedule: Callable[[int], Callable[[int], float]]):
        self.name, self.make_schedule = name, make_schedule

    def before_fit(self, learn: Learner) -> None:
        self.schedule = self.make_schedule(learn.n_epochs * learn.dls.train.n_batches)
        self.step = 0

    def before_batch(self, learn: Learner) -> None:
        if learn.training:
            learn.set_hyper(self.name, float(self.schedule(self.step)))
            self.step += learn.n_steps


class RecorderCB(Callback):
    """Record injected hyperparameters (e.g. 'learning_rate', 'momentum') at every training call."""
    order = ParamSchedulerCB.order + 1

    def __init__(self, *names: str):
        self.names = names

    def before_fit(self, learn: Learner) -> None:
        self.recs: dict[str, list[float]] = {n: [] for n in self.names}

    def before_batch(self, learn: Learner) -> None:
        if learn.training:
            for n in self.names:
                self.recs[n].append(learn.get_hyper(n))

    def plot(self, path: str | Path | None = None):
        from jaxlearn.plots import plot_series
        return plot_series(self.recs, xlabel="training call", path=path)
