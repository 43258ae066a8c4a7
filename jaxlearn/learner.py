"""The Learner: miniai's host loop around the compiled calls of :mod:`jaxlearn.step`.

Epochs, ordered callbacks (sorted once per fit) with miniai's cancel exceptions, ``fit`` / ``evaluate`` /
``predict``, and fastai's shortcuts as thin methods (``fit_one_cycle``, ``lr_find``, ``summary``,
``show_results``, ``export``) that import the module owning each idea when called. Callbacks
(:mod:`jaxlearn.callback`) declare what they need from the compiled step and the Learner compiles once for
them (:mod:`jaxlearn.calls`). The batch loop only launches the compiled call: metrics, schedules and
statistics live inside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh

from jaxlearn import calls, metrics as M, prepare, sharding, step as S
from jaxlearn.callback import CancelBatchException, CancelEpochException, CancelFitException, Callback
from jaxlearn.callbacks.core import MetricsCB
from jaxlearn.checks import check_positive, check_positive_int, check_seed
from jaxlearn.data import ArrayDataset, DataLoaders, check_compatible, check_like, shuffle_key
from jaxlearn.losses import cross_entropy, is_classification
from jaxlearn.optim.hyperparams import get_hyperparam, make_optimizer, set_hyperparams
from jaxlearn.predictions import Prediction, decode
from jaxlearn.trees import copy_state, distinct_buffers


class Learner:
    """``Learner(model, dls, loss_fn, optimizer, callbacks, metrics).fit(n, lr=...)``: miniai's Learner on the
    compiled step.

    Args:
        model: a ``flax.linen`` module. Its ``__call__`` may take a train flag named ``train``, ``training`` or
            ``is_training`` (True while training) or ``deterministic`` (False while training); the Learner
            passes it (:mod:`jaxlearn.train_flag`).
        dls: :class:`~jaxlearn.data.DataLoaders` (``fashion_mnist_loaders``, ``collab_from_csv``,
            ``tabular_from_df``, ``text_loaders``, ``load_dataset(name)``, or ``DataLoaders.from_arrays``).
        loss_fn: ``(preds, y) -> one loss per example``; :func:`~jaxlearn.losses.cross_entropy` (integer labels)
            or :func:`~jaxlearn.losses.mse` (regression).
        optimizer: a factory (``optax.sgd``, ``jaxlearn.optim.adam``, ``partial(optax.adamw, weight_decay=0.01)``,
            or your own ``lambda learning_rate: optax.chain(optax.clip_by_global_norm(1.0),
            optax.adamw(learning_rate))``), wrapped with ``optax.inject_hyperparams`` so ``fit(lr=...)``,
            ``fit_one_cycle``, ``lr_find`` and the schedules change its numbers without recompiling; or a ready
            ``GradientTransformation``, used as it is (its lr can only change if it injects one itself, else those
            calls raise :class:`~jaxlearn.optim.MissingHyperparameter` saying how to write it as a factory).
        callbacks: for every fit (``fit(..., callbacks=[...])`` adds some for one fit). Where they live:
            :mod:`jaxlearn.callbacks.core` (``MetricsCB`` — the epoch table, added unless ``table=False`` —,
            ``ProgressCB``, ``BatchTransformCB``, ``SingleBatchCB``), :mod:`~jaxlearn.callbacks.schedule`
            (``ParamSchedulerCB``, ``RecorderCB``, ``LayerGroupsCB``), :mod:`~jaxlearn.callbacks.activations`
            (``ActivationStats``: ``color_dim``, ``dead_chart``), :mod:`~jaxlearn.callbacks.health` (``HealthCB``),
            :mod:`~jaxlearn.callbacks.monitor` (``GradNormCB``, ``NaNGuardCB``, ``EarlyStoppingCB``,
            ``SaveBestCB``, ``SmoothedLossCB``), :mod:`~jaxlearn.callbacks.checkpoint` (``CheckpointCB``),
            :mod:`~jaxlearn.callbacks.loggers` (``MetricsLoggerCB``, ``TensorBoardCB``),
            :mod:`~jaxlearn.callbacks.lr_finder` (``LRFinderCB``), :mod:`~jaxlearn.callbacks.snapshots`
            (``SGDRSnapshotCB``); all importable from :mod:`jaxlearn.callbacks`.
        lr: the learning rate (a factory's own ``learning_rate`` is kept unless given; default 0.1).
        metrics: names (``"accuracy"``, ``"f1"``, ``"roc_auc"``, ``"mse"``, ``"rmse"``, ``"mae"``...), metrics of
            :mod:`jaxlearn.metrics`, or functions ``(preds, y) -> per-example values``; default accuracy for
            integer labels. Summed on the device, read once per epoch.
        seed: seeds init, shuffling, dropout and augmentation (an integer in 0..2**32-1).
        steps_per_call: batches per compiled call (default: a whole epoch on an accelerator, one on the CPU,
            where XLA's own conv gradients are slow inside a loop).
        mesh: devices to split each batch over (``True``: all; a ``jax.sharding.Mesh``).
        compute_dtype: fastai's ``to_fp16``: ``jnp.bfloat16`` or ``jnp.float16`` (with dynamic loss scaling) for
            the forward and backward passes; params, loss and metric sums stay float32.
        compiler_options: XLA options of the compiled calls (``jax.jit``'s), e.g. ``makemore.CPU_COMPILER_OPTIONS``.
        table: print the epoch table (a ``MetricsCB`` is added when none is given).

    Methods: :meth:`fit`, :meth:`fit_one_cycle`, :meth:`fine_tune`, :meth:`lr_find`, :meth:`diagnose`,
    :meth:`evaluate`, :meth:`predict`, :meth:`summary`, :meth:`show_results`, :meth:`export`.
    """

    def __init__(self, model: nn.Module, dls: DataLoaders, loss_fn: Callable = cross_entropy,
                 optimizer: optax.GradientTransformation | Callable[..., optax.GradientTransformation] = optax.sgd,
                 callbacks: Iterable[Callback] = (), lr: float | None = None,
                 metrics: Sequence[M.AnyMetric | Callable | str] | None = None, seed: int = 0,
                 steps_per_call: int | None = None, mesh: Mesh | bool | None = None, compute_dtype: Any = None,
                 compiler_options: Mapping[str, Any] | None = None, table: bool = True):
        check_seed(seed)
        check_positive_int("steps_per_call", steps_per_call, allow_none=True)
        self.model, self.dls, self.loss_fn, self.seed = model, dls, loss_fn, int(seed)
        self.compute_dtype, self.compiler_options = compute_dtype, dict(compiler_options or {})
        self.callbacks: list[Callback] = list(callbacks)
        if table and not any(isinstance(cb, MetricsCB) for cb in self.callbacks):
            self.callbacks.append(MetricsCB())  # the epoch table, as fastai prints it
        self.steps_per_call = steps_per_call or (1 if jax.default_backend() == "cpu" else dls.train.n_batches)
        self.mesh = sharding.resolve_mesh(mesh)
        check_compatible(dls.train, dls.valid)
        sharding.check_batch_divides(dls.train.batch_size, self.mesh)
        state = prepare.init_state(model, make_optimizer(optimizer, lr), dls.train, self.seed, compute_dtype)
        if lr is not None and isinstance(optimizer, optax.GradientTransformation):  # ready: its lr, if injected
            state = state.replace(opt_state=set_hyperparams(state.opt_state, learning_rate=lr))
        self.metrics = M.as_metrics(prepare.default_metrics(state, dls.train) if metrics is None else metrics)
        self._outputs = outputs = prepare.output_shape(state, dls.train)
        self._sums = M.sums_template(self.metrics, outputs, dls.train.y)
        self.classification = is_classification(outputs, dls.train.y)  # predict decodes labels and probabilities
        prepare.check_loss_and_targets(state, dls, loss_fn)
        self.state = self._put(state)
        self._carry0 = {bs: self._put(prepare.initial_carry(model, dls.train, bs, self.seed))
                        for bs in {dls.train.batch_size, dls.valid.batch_size}}
        self.epochs_done = 0      # training epochs finished over all fits: seeds each epoch's shuffle
        self.fit_epochs_done = 0  # epochs finished in the current / last fit
        self._compiled: dict = {}
        self._placed = {id(ds): self._put((ds.x, ds.y)) for ds in (dls.train, dls.valid)}  # on the mesh once
        self._checked = {id(ds): ds for ds in (dls.train, dls.valid)}  # checked above

    @property
    def state(self) -> S.TrainState:
        """The train state; the next training call donates (reuses) its buffers (``trees.copy_state`` keeps one)."""
        return self._state

    @state.setter
    def state(self, state: S.TrainState) -> None:
        self._state = distinct_buffers(state)  # a buffer in two leaves cannot be donated

    @property
    def n_devices(self) -> int:
        """How many devices each batch is split over (the mesh's data axis; 1 without a mesh)."""
        return sharding.n_data_devices(self.mesh)

    def _put(self, tree: Any) -> Any:
        return sharding.replicate(tree, self.mesh)

    def set_hyper(self, name: str, value: float | jax.Array) -> None:
        """Set an injected optimizer hyperparameter (e.g. 'learning_rate') everywhere it occurs."""
        if name == "learning_rate":
            check_positive("lr", value, allow_zero=True)
        self.replace_state(opt_state=set_hyperparams(self.state.opt_state, **{name: value}))

    def replace_state(self, **fields: Any) -> None:
        """Replace fields of ``learn.state`` (placed on the mesh like the rest of the state)."""
        self.state = self.state.replace(**self._put(fields))

    def get_hyper(self, name: str) -> float:
        """The current value of an injected optimizer hyperparameter (e.g. 'learning_rate'), on the host."""
        return get_hyperparam(self.state.opt_state, name)

    def reset_carry(self, batch_size: int | None = None) -> None:
        """Start the carried state (an RNN's hidden state) afresh; done at every epoch start."""
        bs = batch_size or self.dls.train.batch_size
        if bs in self._carry0 and self._carry0[bs]:
            self.replace_state(model_state={**self.state.model_state, S.CARRY: copy_state(self._carry0[bs])})

    @contextlib.contextmanager
    def trial(self, callbacks: Sequence[Callback] | None = None, steps_per_call: int | None = None):
        """Run trial fits and put everything back afterwards: state, epoch counter, callbacks (during the
        trial only the input transforms and ``callbacks`` take part unless given), ``steps_per_call``."""
        saved = self.state, self.epochs_done, self.callbacks, self.steps_per_call
        self.state = copy_state(self.state)  # the trial's training calls use up a copy: the original stays
        try:
            self.callbacks = [cb for cb in self.callbacks if hasattr(cb, "batch_transform")] \
                if callbacks is None else list(callbacks)
            self.steps_per_call = steps_per_call or self.steps_per_call
            yield self
        finally:
            self.state, self.epochs_done, self.callbacks, self.steps_per_call = saved

    def batch_transform(self) -> S.Transform:
        """The callbacks' input transforms (their ``batch_transform``, in ``order``) composed into one
        ``(x, training, key) -> x``, as the compiled step applies it."""
        return calls.callbacks_transform(sorted(self.callbacks, key=attrgetter("order")))

    @property
    def n_traces(self) -> int:
        """How many times the compiled calls were traced: a fit that recompiles shows here (tests check it stays
        put)."""
        return calls.n_traces(self._compiled)

    def _compile(self, total_steps: int) -> None:
        self._cbs = sorted(self.callbacks, key=attrgetter("order"))
        jit_kwargs = {**sharding.replicated(self.mesh), "compiler_options": self.compiler_options}
        self._train_call, self._eval_call, self._predict, self._hooked = calls.compiled_calls(
            self._compiled, self._cbs, total_steps, self.loss_fn, self.metrics, self.dls,
            sharding.batch_constraint(self.mesh), jit_kwargs, self.compute_dtype)

    # ---------------------------------------------------------------------------------------- the loop
    def callback(self, method_name: str) -> None:
        """Call ``method_name`` (an event: ``'before_fit'``, ``'after_batch'``...) on each callback that has it, in
        ``order``, with the Learner."""
        for cb in self._cbs:
            method = getattr(cb, method_name, None)
            if method is not None:
                method(self)

    def _with(self, name: str, body: Callable[[], None], exception: type[Exception]) -> None:
        try:
            self.callback(f"before_{name}")
            body()
            self.callback(f"after_{name}")
        except exception:
            self.callback(f"after_cancel_{name}")
        finally:
            self.callback(f"cleanup_{name}")

    def fit(self, n_epochs: int = 1, lr: float | None = None, train: bool = True, valid: bool = True,
            callbacks: Iterable[Callback] = ()) -> None:
        """Train ``n_epochs`` (each followed by a validation pass); ``callbacks`` join for this fit only.
        A callback's ``resume_fit``, called first, may restore a state and move ``learn.epochs``' start."""
        check_positive_int("n_epochs", n_epochs)
        if lr is not None:
            check_positive("lr", lr)
            self.set_hyper("learning_rate", lr)
        extra = list(callbacks)
        self.callbacks += extra
        try:
            self.n_epochs, self.epochs, self.fit_epochs_done = n_epochs, range(n_epochs), 0
            self.fit_train, self.fit_valid = train, valid
            self._compile(n_epochs * self.dls.train.n_batches)  # also sorts the callbacks, once per fit
            self.callback("resume_fit")  # e.g. a checkpoint restores the state and moves learn.epochs' start
            self._with("fit", self._fit, CancelFitException)
        finally:
            for cb in extra:
                self.callbacks.remove(cb)

    def _fit(self) -> None:
        # schedules count steps from the fit's start (a resumed fit's start included)
        self._origin = self.state.step - self._put(np.int32(self.epochs.start * self.dls.train.n_batches))
        for self.epoch in self.epochs:
            if self.fit_train:
                self.one_epoch(True)
            if self.fit_valid:
                self.one_epoch(False)
            self.fit_epochs_done = self.epoch + 1

    @property
    def epoch_complete(self) -> bool:
        """In ``after_epoch``: whether this pass is the epoch's last (validation, or training without one)."""
        return not self.training or not getattr(self, "fit_valid", True)

    def one_epoch(self, training: bool, dl: ArrayDataset | None = None) -> None:
        """One pass over ``dl`` (default: the training set if ``training``, else the validation set) with its
        ``before_epoch`` / ``after_epoch`` events; ``training`` False only evaluates."""
        self.training = training
        self.dl = dl or (self.dls.train if training else self.dls.valid)
        self._with("epoch", self._one_epoch, CancelEpochException)

    def _check_dataset(self, ds: ArrayDataset) -> None:
        """A dataset met for the first time (``evaluate(ds)``, a replaced ``dls.valid``): its inputs like the
        training set's, its labels within the model's outputs."""
        if id(ds) not in self._checked:
            name = "train" if ds is self.dls.train else "valid" if ds is self.dls.valid else "evaluated"
            check_compatible(self.dls.train, ds)
            prepare.check_labels(self._outputs, ds, name)
            self._checked[id(ds)] = ds  # kept: an id is only unique while its object lives

    def _one_epoch(self) -> None:
        self._check_dataset(self.dl)
        key = shuffle_key(self.seed, self.dl.seed)  # made on the device: no transfer
        self.indices = self._put(self.dl.epoch_indices(self._put(np.int32(self.epochs_done)), key))
        self.acc, self.pos = self._put(prepare.epoch_start(self._sums))
        self.data = self._placed.get(id(self.dl)) or self._put((self.dl.x, self.dl.y))
        self.reset_carry(self.dl.batch_size)
        self.n_batches = self.dl.n_batches
        if self.training:
            for self.iter in range(0, self.n_batches, self.steps_per_call):
                self.n_steps, self._launched = min(self.steps_per_call, self.n_batches - self.iter), False
                self._with("batch", self._one_batch, CancelBatchException)
                if not self._launched:  # a skipped call: move past its batches
                    self.pos = self.pos + self._put(np.int32(self.n_steps))
            self.epochs_done += 1
        else:
            self.callback("before_batch")
            self.acc, _ = self._eval_call(self.state, self.acc, self.data, *self.indices)
            self.callback("after_batch")
        self.epoch_metrics = M.report(self.metrics, jax.device_get(self.acc))  # the epoch's one read

    def _one_batch(self) -> None:
        self._launched = True
        self._state, self.acc, self.pos, out = self._train_call(self._state, self.acc, self.data, *self.indices,
                                                                self.pos, self._origin, n_steps=self.n_steps)
        self.losses = out.pop("loss")  # (n_steps,) per-batch losses, still on the device
        self.step_outputs = {self._hooked[k]: v for k, v in out.items()}

    def predict(self, x: Any, batch_size: int = 1024, raw: bool = False) -> Prediction | np.ndarray:
        """Predictions for raw inputs ``x`` (like the training set's: same dtype and range; a single example
        may omit the batch axis), in eval mode with the evaluation input transforms, batched on the device.

        A classifier returns fastai's ``label, index, probs`` (:class:`~jaxlearn.predictions.Prediction`, the
        label named from ``dls.info['classes']``); other models, or ``raw=True``, the model's outputs."""
        x, single = check_like(x, self.dls.train)
        self._compile(0)
        out = S.predict_in_batches(self._predict, self.state, x, batch_size, self._put)
        out = out[0] if single else out
        return out if raw or not self.classification else decode(out, self.dls.info.get("classes"), single)

    def evaluate(self, ds: ArrayDataset | None = None) -> dict[str, float]:
        """Loss and metrics on ``ds`` (default: the validation set), with the input transforms only."""
        with self.trial():
            self._compile(0)
            self.one_epoch(False, ds)
            return dict(self.epoch_metrics)

    # ------------------------------------------------------------------ fastai's shortcuts, owned elsewhere
    def fit_one_cycle(self, n_epochs: int, lr_max: float | None = None, div: float = 25.0,
                      div_final: float = 1e5, pct_start: float = 0.25,
                      moms: Sequence[float] | None = (0.95, 0.85, 0.95), callbacks: Sequence[Callback] = (),
                      **fit_kwargs: Any) -> None:
        """fastai's ``fit_one_cycle``: ``fit`` with the lr and the momentum on one-cycle schedules (see
        :func:`jaxlearn.callbacks.schedule.fit_one_cycle`)."""
        from jaxlearn.callbacks.schedule import fit_one_cycle
        fit_one_cycle(self, n_epochs, lr_max, div, div_final, pct_start, moms, callbacks, **fit_kwargs)

    def fine_tune(self, epochs: int, base_lr: float = 2e-3, freeze_epochs: int = 1, lr_mult: float = 100.0,
                  pct_start: float = 0.3, div: float = 5.0, **kwargs: Any) -> None:
        """fastai's ``fine_tune``: the head alone for ``freeze_epochs``, then every layer group with differential
        lrs (see :func:`jaxlearn.callbacks.schedule.fine_tune`; the optimizer needs layer groups)."""
        from jaxlearn.callbacks.schedule import fine_tune
        fine_tune(self, epochs, base_lr, freeze_epochs, lr_mult, pct_start, div, **kwargs)

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100,
                suggest: Sequence[str] = ("valley", "minimum"), plot: bool | str | Path = True) -> tuple:
        """fastai's ``learn.lr_find()``: the range test, the Learner put back exactly; returns the suggested lrs
        (see :func:`jaxlearn.callbacks.lr_finder.suggest_lrs`)."""
        from jaxlearn.callbacks.lr_finder import suggest_lrs
        return suggest_lrs(self, start_lr, end_lr, num_it, suggest, plot)

    def diagnose(self, n_batches: int = 100) -> Any:
        """A training-health report from a short trial fit of ``n_batches`` batches, the Learner put back exactly:
        the problems found (dead units, saturation, a high initial loss, an lr far off...), each with its layer,
        evidence and remedy (:func:`jaxlearn.callbacks.health.diagnose`; ``HealthCB`` checks during a fit)."""
        from jaxlearn.callbacks.health import diagnose
        return diagnose(self, n_batches)

    def summary(self, print_fn: Callable[[str], Any] | None = print) -> str:
        """fastai's ``learn.summary()``: each layer's output shape and parameter count
        (:func:`jaxlearn.interpret.summary`)."""
        from jaxlearn.interpret import summary
        return summary(self, print_fn)

    def show_results(self, n: int = 9, ds: ArrayDataset | None = None, path: str | Path | None = None):
        """fastai's ``learn.show_results()``: validation images titled predicted / true
        (:func:`jaxlearn.interpret.show_results`)."""
        from jaxlearn.interpret import show_results
        return show_results(self, n, ds, path)

    def export(self, path: str | Path, overwrite: bool = False) -> Path:
        """fastai's ``learn.export``: what :func:`jaxlearn.export.load_learner` needs to predict, written to the
        folder ``path`` atomically, with checksums (:func:`jaxlearn.export.export`). An existing folder is
        replaced only if it is a jaxlearn export (or empty), or with ``overwrite=True``."""
        from jaxlearn.export import export
        return export(self, path, overwrite)
