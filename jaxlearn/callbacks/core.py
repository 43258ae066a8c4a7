"""The Learner's everyday callbacks (miniai's, one idea per class): the epoch table, progress bars, a one-batch
smoke test, input transforms inside the compiled step.

Per-batch numbers stay on the device as arrays until a callback needs them on the host (at the end of an
epoch or of the fit), so callbacks never stall the asynchronous dispatch of compiled steps.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import jax
import numpy as np

from jaxlearn.callback import CancelFitException, Callback, LearnerLike, StepRecorder


class MetricsCB(Callback):
    """Keeps ``history`` (one row per epoch: train/valid loss and accuracy, seconds) and prints the table.

    ``show`` (default True): print each epoch's row (a header first) through ``learn.log`` when its validation
    pass ends; False only keeps ``history``."""
    order = 1

    def __init__(self, show: bool = True):
        self.show = show

    def before_fit(self, learn: LearnerLike) -> None:
        """Start this fit's rows (resumed ones first)."""
        # a fit resumed from a checkpoint starts from the rows the checkpoint kept (every MetricsCB of the fit:
        # the Learner's default table and one given to fit, say), which are dropped once the fit is over
        self.history: list[dict] = [dict(r) for r in getattr(learn, "resumed_history", None) or []]
        self._printed_header = False

    def before_epoch(self, learn: LearnerLike) -> None:
        """Open the epoch's row (a validation pass fills the training pass's row) and start its clock."""
        if learn.training or not self.history or "valid_loss" in self.history[-1]:
            self.history.append({"epoch": learn.epoch})
        self._t0 = time.perf_counter()

    def after_epoch(self, learn: LearnerLike) -> None:
        """Write the pass's metrics and seconds into the row (``train_loss``, ``valid_accuracy``, ...); print it
        after the validation pass."""
        row, prefix = self.history[-1], "train" if learn.training else "valid"
        for k, v in learn.epoch_metrics.items():
            row[f"{prefix}_{k}"] = v
        row[f"{prefix}_seconds"] = time.perf_counter() - self._t0
        if not learn.training and self.show:
            self._print(learn, row)

    def after_fit(self, learn: LearnerLike) -> None:
        """Print the last row if no validation pass printed it (a fit without validation)."""
        if self.show and self.history and "valid_loss" not in self.history[-1]:
            self._print(learn, self.history[-1])

    def cleanup_fit(self, learn: LearnerLike) -> None:
        """Drop the rows a resumed checkpoint handed over, however the fit ended."""
        learn.resumed_history = None

    def _print(self, learn: LearnerLike, row: dict) -> None:
        cols = [k for k in row if not k.endswith("seconds")] + ["seconds"]
        if not self._printed_header:
            getattr(learn, "log", print)(" ".join(f"{c:>14}" for c in cols))
            self._printed_header = True
        seconds = row.get("train_seconds", 0.0) + row.get("valid_seconds", 0.0)
        values = [row[c] if c != "seconds" else seconds for c in cols]
        getattr(learn, "log", print)(" ".join(f"{v:>14.4f}" if isinstance(v, float) else f"{v:>14}"
                                              for v in values))


def bars_can_redraw() -> bool:
    """Whether a progress bar would be seen redrawing in place: stderr is a terminal, or this is a Jupyter
    kernel (where ``tqdm.auto`` draws a widget). Elsewhere (a log file, a pipe, a test's captured output) a
    bar would only leave a trail of carriage-return lines between the epoch table's rows."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if getattr(shell, "kernel", None) is not None:
        return True
    return sys.stderr is not None and sys.stderr.isatty()


class ProgressCB(StepRecorder):
    """tqdm bars for epochs and batches; per-batch training losses kept (``losses``) and optionally plotted.

    ``plot_path``: where to save the plot of the training losses (with the validation losses at each epoch's
    end) when the fit ends; None (default) plots nothing. ``leave``: keep the epochs bar on screen after the fit
    (default False: it is cleared; the batch bars always are).
    ``show_bars``: None (default) draws the bars only where they can redraw (:func:`bars_can_redraw`: a
    terminal or a notebook), so output sent to a file holds just the epoch table; True or False forces it.
    """
    order = MetricsCB.order + 1

    def __init__(self, plot_path: str | Path | None = None, leave: bool = False, show_bars: bool | None = None):
        self.plot_path, self.leave, self.show_bars = plot_path, leave, show_bars
        self.epoch_bar = self.batch_bar = None

    def before_fit(self, learn: LearnerLike) -> None:
        super().before_fit(learn)
        from tqdm.auto import tqdm
        show = bars_can_redraw() if self.show_bars is None else self.show_bars
        # disable only as a default of ours: tqdm's own off switch (TQDM_DISABLE, --no-progress) still wins
        self._tqdm = partial(tqdm, **({} if show else {"disable": True}))
        self.epoch_bar = self._tqdm(total=learn.n_epochs, desc="epochs", leave=self.leave)
        if show:  # print the epoch table above the bars, not through them
            learn.log = self.epoch_bar.write
        self.valid_losses: list[tuple[int, float]] = []
        self._n_train = 0

    def before_epoch(self, learn: LearnerLike) -> None:
        """Open the pass's batch bar (the training pass's batches; one step for the validation pass)."""
        total = learn.dl.n_batches if learn.training else 1
        self.batch_bar = self._tqdm(total=total, desc="train" if learn.training else "valid", leave=False)

    def record(self, learn: LearnerLike) -> jax.Array:
        return learn.losses

    def after_batch(self, learn: LearnerLike) -> None:
        super().after_batch(learn)
        self.batch_bar.update(learn.n_steps if learn.training else 1)
        self._n_train += learn.n_steps if learn.training else 0

    def after_epoch(self, learn: LearnerLike) -> None:
        """Close the batch bar; advance the epochs bar (training) or keep the validation loss (validation)."""
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
        """Close the bars, give ``learn.log`` back to ``print`` and save the plot to ``plot_path`` if one is set."""
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
        """Stop the fit after its first call (``CancelFitException``)."""
        raise CancelFitException()


class BatchTransformCB(Callback):
    """Apply ``tfm`` to the inputs inside the compiled step (e.g. ``data.normalize(0.28, 0.35)``).

    ``on_train`` / ``on_val`` (default True each): apply it in the training / validation pass; an augmentation
    applies only in training (``on_val=False``)."""

    def __init__(self, tfm: Callable[[jax.Array], jax.Array], on_train: bool = True, on_val: bool = True):
        self.tfm, self.on_train, self.on_val = tfm, on_train, on_val

    @property
    def signature(self) -> tuple:
        return (type(self), self.tfm, self.on_train, self.on_val)

    def batch_transform(self, x: jax.Array, training: bool, key: jax.Array) -> jax.Array:
        """``tfm(x)`` in the passes it is on for (``on_train`` / ``on_val``), else ``x`` unchanged; ``key`` unused."""
        return self.tfm(x) if (self.on_train if training else self.on_val) else x

