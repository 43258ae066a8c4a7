"""The compiled train step and the Learner that drives it.

Two layers, as in flax's ``examples/imagenet/train.py`` and miniai's ``learner.py``:

* pure functions — :class:`TrainState`, :func:`create_train_state`, :func:`make_train_step`,
  :func:`make_eval_step` — where one jitted call does forward, loss, grads, the optax update and every
  per-layer statistic a callback asked for, reduced on the device;
* :class:`Learner`, the host loop: epochs, ordered callbacks with miniai's cancel semantics, and
  ``steps_per_call`` batches per compiled call (``lax.scan``) for models too small to keep a device busy.

Data parallel: with more than one device (or ``Learner(..., mesh=...)``) the Learner runs the same compiled
step over a :class:`jax.sharding.Mesh` with a ``'data'`` axis: params, optimizer and norm state replicated,
each gathered batch sharded over ``'data'``; XLA inserts the collectives, so gradients and BatchNorm
statistics are over the whole global batch. Under ``jax.distributed.initialize`` every process holds the
dataset and the jitted gather produces the globally sharded batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxlearn.data import ArrayDataset, DataLoaders
from jaxlearn.stats import flatten_intermediates

PyTree = Any
Batch = tuple[jax.Array, jax.Array, jax.Array]  # inputs, targets, per-example weight (0 = padding)


class CancelFitException(Exception):
    """Raised by a callback to stop the fit; ``after_cancel_fit`` and ``cleanup_fit`` still run."""


class CancelEpochException(Exception):
    """Raised by a callback to skip the rest of the current epoch (training or validation pass)."""


class CancelBatchException(Exception):
    """Raised by a callback (``before_batch``) to skip the current batch."""


class TrainState(struct.PyTreeNode):
    """Everything a training run carries from step to step; a pytree, so it passes through ``jit``.

    ``model_state`` holds the model's collections other than params (e.g. ``{'batch_stats': ...}``);
    ``rng`` is a fixed key from which each step derives its own (``fold_in(rng, step)``), so dropout and
    augmentation depend only on the seed and the step number.
    """
    step: jax.Array
    params: PyTree
    model_state: PyTree
    opt_state: PyTree
    rng: jax.Array
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    def variables(self, params: PyTree | None = None) -> dict:
        return {"params": self.params if params is None else params, **self.model_state}


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, sample_x: jax.Array,
                       seed: int = 0) -> TrainState:
    """Initialize ``model`` on ``sample_x`` (a small batch of inputs) and ``tx`` on its params."""
    init_key, rng = jax.random.split(jax.random.key(seed))
    variables = dict(model.init({"params": init_key, "dropout": init_key}, sample_x, train=False))
    params = variables.pop("params")
    variables.pop("intermediates", None)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                      opt_state=tx.init(params), rng=rng, apply_fn=model.apply, tx=tx)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


@dataclass(frozen=True)
class StepContext:
    """What a callback's ``in_step`` hook sees while the train step is traced (all arrays are traced).

    Hooks must reduce what they keep (means, histograms, norms): their outputs leave the device.
    """
    x: jax.Array
    y: jax.Array
    weight: jax.Array
    preds: jax.Array
    loss: jax.Array
    grads: PyTree
    updates: PyTree
    params: PyTree
    new_params: PyTree
    intermediates: dict[str, jax.Array]
    state: TrainState


def _sums(preds: jax.Array, y: jax.Array, losses: jax.Array, weight: jax.Array) -> dict[str, jax.Array]:
    """Weighted loss (and, for classification, correct-prediction) sums of one batch."""
    sums = {"loss": (losses * weight).sum(), "count": weight.sum()}
    if preds.ndim == y.ndim + 1 and jnp.issubdtype(y.dtype, jnp.integer):
        sums["correct"] = ((preds.argmax(-1) == y) * weight).sum()
    return sums


def _per_example_loss(loss_fn: Callable, preds: jax.Array, y: jax.Array) -> jax.Array:
    losses = loss_fn(preds, y)
    if losses.shape != preds.shape[:1]:
        raise ValueError(f"loss_fn must return one loss per example, shape {preds.shape[:1]}, "
                         f"got {losses.shape}")
    return losses


def make_train_step(loss_fn: Callable = cross_entropy,
                    capture: Callable[[nn.Module, str], bool] | None = None,
                    hooks: Mapping[str, Callable[[StepContext], PyTree]] | None = None
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """``train_step(state, (x, y, weight)) -> (state, metrics)``: one pure step, ready for ``jax.jit``.

    The loss is the weighted mean of ``loss_fn``'s per-example losses. ``capture`` selects modules whose
    outputs go to the ``intermediates`` collection; each ``hooks[name](ctx)`` reduces them (or the grads,
    updates, ...) to small arrays returned in ``metrics[name]``. ``metrics['sums']`` holds the loss /
    correct / count sums that the Learner accumulates on the device.
    """
    hooks = dict(hooks or {})

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        x, y, weight = batch
        step_key = jax.random.fold_in(state.rng, state.step)
        mutable = list(state.model_state) + (["intermediates"] if capture else [])

        def loss_of(params):
            preds, new_vars = state.apply_fn(
                state.variables(params), x, train=True, rngs={"dropout": step_key},
                mutable=mutable, capture_intermediates=capture or False)
            losses = _per_example_loss(loss_fn, preds, y)
            return (losses * weight).sum() / jnp.maximum(weight.sum(), 1.0), (preds, losses, new_vars)

        (loss, (preds, losses, new_vars)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_vars = dict(new_vars)
        intermediates = flatten_intermediates(new_vars.pop("intermediates", {}))
        new_state = state.replace(step=state.step + 1, params=params, model_state=new_vars,
                                  opt_state=opt_state)
        metrics = {"loss": loss, "sums": _sums(preds, y, losses, weight)}
        if hooks:
            ctx = StepContext(x, y, weight, preds, loss, grads, updates, state.params, params,
                              intermediates, state)
            metrics.update({name: hook(ctx) for name, hook in hooks.items()})
        return new_state, metrics

    return train_step


def make_eval_step(loss_fn: Callable = cross_entropy) -> Callable[[TrainState, Batch], dict]:
    """``eval_step(state, (x, y, weight)) -> sums``: the model in inference mode (running norm stats)."""
    def eval_step(state: TrainState, batch: Batch) -> dict:
        x, y, weight = batch
        preds = state.apply_fn(state.variables(), x, train=False)
        return _sums(preds, y, _per_example_loss(loss_fn, preds, y), weight)
    return eval_step


_AUGMENT_STREAM = 1  # folded into the step key so augmentation and dropout draw independent numbers
_SHUFFLE_STREAM = 2  # folded into the Learner's seed for the datasets' shuffling
_EVAL_SEED = 0  # evaluation transforms see a fixed key: the same inputs give the same predictions
DATA_AXIS = "data"  # the mesh axis the batch is sharded over


def _gather(ds: ArrayDataset, transform: Callable, key: jax.Array, x_all, y_all, idx, weight,
            constrain: Callable = lambda t: t) -> Batch:
    """The batch ``idx`` from the device-resident dataset; ``constrain`` shards it (data parallel)."""
    x, y, weight = constrain((x_all[idx], y_all[idx], weight))
    return transform(ds.transform(x), key), y, weight


def _add(acc: dict, sums: dict) -> dict:
    return jax.tree.map(jnp.add, acc, sums)


class Callback:
    """Base class: override any of ``before_/after_/after_cancel_/cleanup_`` + ``fit/epoch/batch``.

    A callback that needs numbers from inside the compiled step sets ``capture`` (a module filter for the
    intermediates collection) and/or defines ``in_step(ctx) -> pytree of small arrays``; it then finds the
    results, stacked over the steps of the call, in ``learn.step_outputs[self]`` in ``after_batch``.
    ``batch_transform(x, training, key)`` (if defined) is applied to inputs inside the compiled step; ``key``
    is a PRNG key for random augmentation, derived from the train state's seed and step.
    """
    order: int = 0
    capture: Callable[[nn.Module, str], bool] | None = None


class Learner:
    """miniai's Learner, the JAX way: ``Learner(model, dls, loss_fn, optimizer, callbacks).fit(n, lr=...)``.

    ``optimizer`` is an optax ``GradientTransformation``, or a factory such as ``optax.sgd`` /
    ``jaxlearn.optim.adam`` that is wrapped with ``optax.inject_hyperparams`` so the learning rate (and any
    other hyperparameter) can be changed between calls without recompiling (:meth:`set_hyper`).

    The compiled functions are built once per fit, for the callbacks of that fit, and reused by later fits
    with the same in-step callbacks. ``steps_per_call`` batches run in one ``lax.scan``; batch callbacks then
    fire once per call, ``learn.iter`` being the call's first batch and ``learn.n_steps`` its length.
    """

    def __init__(self, model: nn.Module, dls: DataLoaders, loss_fn: Callable = cross_entropy,
                 optimizer: optax.GradientTransformation | Callable[..., optax.GradientTransformation] = optax.sgd,
                 callbacks: Iterable[Callback] = (), lr: float = 0.1, seed: int = 0, steps_per_call: int = 1,
                 mesh: Mesh | bool | None = None):
        _check_positive("lr", lr)
        if not isinstance(steps_per_call, int) or steps_per_call < 1:
            raise ValueError(f"steps_per_call must be a positive integer, got {steps_per_call!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        self.model, self.dls, self.loss_fn = model, dls, loss_fn
        self.callbacks: list[Callback] = list(callbacks)
        self.steps_per_call, self.seed = steps_per_call, int(seed)
        self.mesh = _resolve_mesh(mesh)
        self._check_data()
        tx = optimizer if isinstance(optimizer, optax.GradientTransformation) \
            else optax.inject_hyperparams(optimizer)(learning_rate=lr)
        sample = dls.train.transform(dls.train.x[:2])
        try:
            state = create_train_state(model, tx, sample, self.seed)
        except Exception as e:  # the model's first call: a shape / dtype it cannot take
            raise ValueError(f"the model cannot be initialized on the training inputs (per example shape "
                             f"{tuple(sample.shape[1:])}, dtype {sample.dtype} after the dataset's transform; "
                             f"stored as {tuple(dls.train.x.shape[1:])} {dls.train.x.dtype}): "
                             f"{type(e).__name__}: {e}") from e
        self.state = self._put(state)
        self._check_targets()
        self.epochs_done = 0  # training epochs finished over all fits: seeds each epoch's shuffle
        self.fit_epochs_done = 0  # epochs (training + validation pass) finished in the current / last fit
        self.n_traces = 0     # times a train/eval function was traced (tests check it stays put)
        self.resumed_from: str | None = None  # the checkpoint directory the current fit resumed from
        self._compiled: dict = {}
        self._placed: list = []  # (dataset, its arrays on the mesh)

    # -------------------------------------------------------------------------- checks and hyperparameters
    def _check_data(self) -> None:
        """Train and valid sets must agree (per-example shape, dtype); batches must split over the mesh."""
        tr, va = self.dls.train, self.dls.valid
        for what, a, b in (("inputs", tr.x, va.x), ("labels", tr.y, va.y)):
            if a.shape[1:] != b.shape[1:] or a.dtype != b.dtype:
                raise ValueError(f"train and valid {what} differ: per example {tuple(a.shape[1:])} {a.dtype} vs "
                                 f"{tuple(b.shape[1:])} {b.dtype}")
        if self.mesh is not None:
            n = self.mesh.shape[DATA_AXIS]
            if tr.batch_size % n:
                raise ValueError(f"batch size {tr.batch_size} is not divisible by the {n} devices of the mesh's "
                                 f"'{DATA_AXIS}' axis (each device takes an equal slice of every batch): use a "
                                 f"multiple of {n}, e.g. {-(-tr.batch_size // n) * n}, or Learner(..., mesh=False) "
                                 f"for one device")

    def _check_targets(self) -> None:
        """Labels must index the model's outputs: caught here, not as a silently wrong loss later."""
        sample = self.dls.train.transform(self.dls.train.x[:2])
        preds = jax.eval_shape(lambda s, x: s.apply_fn(s.variables(), x, train=False), self.state, sample)
        y = self.dls.train.y
        self.classification = preds.ndim == y.ndim + 1 and jnp.issubdtype(y.dtype, jnp.integer)
        if self.loss_fn is cross_entropy and not self.classification:
            raise ValueError(f"cross_entropy needs one integer class label per example: the model outputs "
                             f"{tuple(preds.shape[1:])} {preds.dtype} per example, the labels are "
                             f"{tuple(y.shape[1:])} {y.dtype} per example")
        try:
            jax.eval_shape(lambda p, t: _per_example_loss(self.loss_fn, p, t), preds, y[:2])
        except Exception as e:
            raise ValueError(f"loss_fn cannot take the model's outputs ({tuple(preds.shape[1:])} {preds.dtype} "
                             f"per example) and the labels ({tuple(y.shape[1:])} {y.dtype} per example): "
                             f"{type(e).__name__}: {e}") from e
        for name, ds in (("train", self.dls.train), ("valid", self.dls.valid)):
            if self.classification:
                lo, hi = int(ds.y.min()), int(ds.y.max())
                if lo < 0 or hi >= preds.shape[-1]:
                    raise ValueError(f"{name} labels span {lo}..{hi} but the model has {preds.shape[-1]} "
                                     f"outputs: labels must be in 0..{preds.shape[-1] - 1}")

    # ------------------------------------------------------------------------------- devices and data
    @property
    def n_devices(self) -> int:
        """Devices each batch is split over (1 without a mesh)."""
        return 1 if self.mesh is None else self.mesh.shape[DATA_AXIS]

    def _put(self, tree: PyTree) -> PyTree:
        """Replicate host / single-device values over the mesh (a global array under multi-process)."""
        if self.mesh is None:
            return tree
        if jax.process_count() == 1:
            return jax.device_put(tree, NamedSharding(self.mesh, P()))
        return multihost_utils.host_local_array_to_global_array(tree, self.mesh, P())

    def _arrays(self, ds: ArrayDataset) -> tuple[jax.Array, jax.Array]:
        """``ds.x, ds.y`` where the compiled calls read them: replicated over the mesh, placed once."""
        if self.mesh is None:
            return ds.x, ds.y
        for placed_ds, arrays in self._placed:
            if placed_ds is ds:
                return arrays
        arrays = self._put((ds.x, ds.y))
        self._placed.append((ds, arrays))
        return arrays

    def _shuffle_key(self, ds: ArrayDataset) -> jax.Array:
        """Each dataset's shuffle derives from the Learner's seed (and the dataset's own seed)."""
        return jax.random.fold_in(jax.random.fold_in(jax.random.key(self.seed), _SHUFFLE_STREAM), ds.seed)

    def set_hyper(self, name: str, value: float | jax.Array) -> None:
        """Set an injected optimizer hyperparameter (e.g. 'learning_rate') everywhere it occurs."""
        if name == "learning_rate":
            _check_positive("lr", value, allow_zero=True)
        try:
            current = optax.tree_utils.tree_get_all_with_path(self.state.opt_state, name)
        except KeyError:
            current = []
        if not current:
            raise KeyError(f"the optimizer has no injectable hyperparameter {name!r}: pass a factory such as "
                           f"optax.sgd, or wrap it with optax.inject_hyperparams")
        dtype = jnp.asarray(current[0][1]).dtype  # same dtype as before, so the step is not retraced
        value = self._put(jnp.broadcast_to(jnp.asarray(value, dtype), jnp.shape(current[0][1])))
        self.state = self.state.replace(opt_state=optax.tree_utils.tree_set(self.state.opt_state,
                                                                           **{name: value}))

    def get_hyper(self, name: str) -> float:
        return float(np.asarray(optax.tree_utils.tree_get(self.state.opt_state, name)).reshape(-1)[0])

    # ----------------------------------------------------------------------------------- compiled calls
    def _compile(self) -> None:
        in_step = [cb for cb in self.callbacks if hasattr(cb, "in_step") or cb.capture is not None]
        transforms = [cb for cb in self.callbacks if hasattr(cb, "batch_transform")]
        key = (tuple(map(id, in_step)), tuple(map(id, transforms)))
        if key not in self._compiled:
            self._compiled[key] = self._build(in_step, transforms)
        self._train_call, self._eval_call, self._hook_callbacks = self._compiled[key]

    def _build(self, in_step: Sequence[Callback], transforms: Sequence[Callback]):
        filters = [cb.capture for cb in in_step if cb.capture is not None]
        capture = (lambda mdl, method: any(f(mdl, method) for f in filters)) if filters else None
        hooks = {f"cb{i}": cb.in_step for i, cb in enumerate(in_step) if hasattr(cb, "in_step")}
        train_step = make_train_step(self.loss_fn, capture, hooks)
        eval_step = make_eval_step(self.loss_fn)

        def transform_for(training: bool) -> Callable:
            def apply(x, key):
                for i, cb in enumerate(sorted(transforms, key=attrgetter("order"))):
                    x = cb.batch_transform(x, training, jax.random.fold_in(key, i))
                return x
            return apply

        train_tfm, eval_tfm = transform_for(True), transform_for(False)
        train_ds, valid_ds = self.dls.train, self.dls.valid
        shard = self._constraint()

        def train_call(state, acc, x_all, y_all, idx, weight, start, n_steps):
            self.n_traces += 1  # runs only while tracing
            chunk = (jax.lax.dynamic_slice_in_dim(idx, start, n_steps),
                     jax.lax.dynamic_slice_in_dim(weight, start, n_steps))

            def body(carry, iw):
                state, acc = carry
                key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), _AUGMENT_STREAM)
                batch = _gather(train_ds, train_tfm, key, x_all, y_all, *iw, shard)
                state, metrics = train_step(state, batch)
                return (state, _add(acc, metrics.pop("sums"))), metrics

            if n_steps == 1:
                # No loop for a single step: inside any loop XLA's CPU backend keeps conv weight-gradients
                # in a form ~20x slower than outside one (measured on the lesson-17 CNN and the ResNet).
                (state, acc), out = body((state, acc), jax.tree.map(lambda a: a[0], chunk))
                return state, acc, jax.tree.map(lambda a: a[None], out)
            (state, acc), outputs = jax.lax.scan(body, (state, acc), chunk)
            return state, acc, outputs

        def eval_call(state, acc, x_all, y_all, idx, weight):
            self.n_traces += 1
            def body(acc, iw):
                batch = _gather(valid_ds, eval_tfm, jax.random.key(_EVAL_SEED), x_all, y_all, *iw, shard)
                return _add(acc, eval_step(state, batch)), None
            return jax.lax.scan(body, acc, (idx, weight))[0]

        hook_callbacks = {f"cb{i}": cb for i, cb in enumerate(in_step) if hasattr(cb, "in_step")}
        # On a mesh every output (state, sums, per-step metrics) is replicated: the next call's inputs keep
        # one sharding, so nothing is retraced.
        out = {} if self.mesh is None else {"out_shardings": NamedSharding(self.mesh, P())}
        return (jax.jit(train_call, static_argnames="n_steps", **out), jax.jit(eval_call, **out), hook_callbacks)

    def _constraint(self) -> Callable:
        """Shard a gathered batch over the mesh's 'data' axis (identity without a mesh).

        A batch that does not split evenly (possible for the validation set, whose batch size need not be
        a multiple of the device count) is left replicated: every device evaluates all of it.
        """
        if self.mesh is None:
            return lambda t: t
        sharding, n = NamedSharding(self.mesh, P(DATA_AXIS)), self.n_devices
        return lambda t: jax.tree.map(
            lambda a: jax.lax.with_sharding_constraint(a, sharding) if a.shape[0] % n == 0 else a, t)

    # ---------------------------------------------------------------------------------------- the loop
    def callback(self, method_name: str) -> None:
        for cb in sorted(self.callbacks, key=attrgetter("order")):
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
            callbacks: Iterable[Callback] = (), resume_from: str | None = None) -> None:
        """Train ``n_epochs`` (each followed by a validation pass); ``callbacks`` join for this fit only.

        ``resume_from`` (a :class:`~jaxlearn.checkpoint.CheckpointCB` directory) first restores the latest
        checkpoint there — params, norm statistics, optimizer state, step, PRNG key, ``epochs_done`` — and
        skips the epochs of this fit that it had finished: an interrupted ``fit(n)`` resumed with the same
        ``fit(n, resume_from=dir)`` trains exactly as if it had never stopped.
        """
        if not isinstance(n_epochs, int) or n_epochs < 0:
            raise ValueError(f"n_epochs must be a non-negative integer, got {n_epochs!r}")
        if lr is not None:
            _check_positive("lr", lr, allow_zero=True)
            if np.any(np.asarray(lr) == 0):
                raise ValueError(f"lr must be positive to train, got {lr!r}")
        start = 0
        if resume_from is not None:
            from jaxlearn.checkpoint import restore_checkpoint  # checkpoint imports this module
            position = restore_checkpoint(self, resume_from)
            start = min(int(position.get("fit_epoch", 0)), n_epochs)
        self.resumed_from = None if resume_from is None else str(resume_from)
        extra = list(callbacks)
        self.callbacks += extra
        try:
            if lr is not None:
                self.set_hyper("learning_rate", lr)
            self.n_epochs = n_epochs
            self.epochs = range(start, n_epochs)
            self.fit_train, self.fit_valid = train, valid
            self.fit_epochs_done = start
            self._compile()
            self._with("fit", lambda: self._fit(train, valid), CancelFitException)
        finally:
            for cb in extra:
                self.callbacks.remove(cb)

    def _fit(self, train: bool, valid: bool) -> None:
        for self.epoch in self.epochs:
            if train:
                self.one_epoch(True)
            if valid:
                self.one_epoch(False)
            self.fit_epochs_done = self.epoch + 1

    @property
    def epoch_complete(self) -> bool:
        """In ``after_epoch``: whether this pass is the epoch's last (validation, or training without one)."""
        return not self.training or not getattr(self, "fit_valid", True)

    def one_epoch(self, training: bool) -> None:
        self.training = training
        self.dl = self.dls.train if training else self.dls.valid
        self._with("epoch", self._one_epoch, CancelEpochException)

    def _one_epoch(self) -> None:
        idx, weight = self.dl.epoch_indices(self.epochs_done, key=self._shuffle_key(self.dl))
        acc = {k: jnp.zeros(()) for k in ("loss", "count", "correct")[:3 if self.classification else 2]}
        idx, weight, acc = self._put((idx, weight, acc))
        x_all, y_all = self._arrays(self.dl)
        if self.training:
            self.n_batches = idx.shape[0]
            for self.iter in range(0, self.n_batches, self.steps_per_call):
                self.n_steps = min(self.steps_per_call, self.n_batches - self.iter)
                self.acc, self.batch = acc, (idx, weight)
                self._with("batch", self._one_batch, CancelBatchException)
                acc = self.acc
            self.epochs_done += 1
        else:
            self.callback("before_batch")
            acc = self._eval_call(self.state, acc, x_all, y_all, idx, weight)
            self.callback("after_batch")
        sums = jax.device_get(acc)  # the one device→host read of the epoch's metrics
        self.epoch_metrics = {"loss": float(sums["loss"] / max(sums["count"], 1))}
        if "correct" in sums:
            self.epoch_metrics["accuracy"] = float(sums["correct"] / max(sums["count"], 1))

    def _one_batch(self) -> None:
        idx, weight = self.batch
        x_all, y_all = self._arrays(self.dl)
        self.state, self.acc, outputs = self._train_call(self.state, self.acc, x_all, y_all, idx,
                                                         weight, self.iter, n_steps=self.n_steps)
        self.loss = outputs.pop("loss")  # (n_steps,) per-batch losses, still on the device
        self.step_outputs = {self._hook_callbacks[k]: v for k, v in outputs.items()}

    # ------------------------------------------------------------------------------------- predictions
    def predict(self, x: jax.Array, batch_size: int = 1024, transform: Callable | None = None) -> np.ndarray:
        """Model outputs for raw inputs ``x`` (eval mode), batched on the device."""
        tfm = self.dls.valid.transform if transform is None else transform
        fn = self._predict_fn()
        outs = [fn(self.state, self._put(tfm(jnp.asarray(x[i:i + batch_size]))))
                for i in range(0, len(x), batch_size)]
        return np.concatenate(jax.device_get(outs))

    def _predict_fn(self):
        if not hasattr(self, "_predict"):
            tfms = [cb for cb in self.callbacks if hasattr(cb, "batch_transform")]

            def predict(state, x):
                for i, cb in enumerate(sorted(tfms, key=attrgetter("order"))):
                    x = cb.batch_transform(x, False, jax.random.fold_in(jax.random.key(_EVAL_SEED), i))
                return state.apply_fn(state.variables(), x, train=False)
            self._predict = jax.jit(predict)
        return self._predict

    def evaluate(self, ds: ArrayDataset | None = None) -> dict[str, float]:
        """Loss and accuracy on ``ds`` (default: the validation set) without callbacks."""
        saved = getattr(self, "dl", None), getattr(self, "training", None), self.callbacks
        self.callbacks = [cb for cb in self.callbacks if hasattr(cb, "batch_transform")]
        try:
            self._compile()
            self.dl, self.training = ds or self.dls.valid, False
            self._one_epoch()
            return dict(self.epoch_metrics)
        finally:
            self.dl, self.training, self.callbacks = saved


def _resolve_mesh(mesh: Mesh | bool | None) -> Mesh | None:
    """``None``: a 'data' mesh over all devices when there is more than one; ``True``: one even on a single
    device; ``False``: no mesh (one device); a :class:`Mesh`: it must have a 'data' axis."""
    if mesh is None or mesh is True:
        devices = jax.devices()
        return Mesh(np.array(devices), (DATA_AXIS,)) if len(devices) > 1 or mesh is True else None
    if mesh is False:
        return None
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, True, False or None, got {mesh!r}")
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(f"the mesh needs a '{DATA_AXIS}' axis to shard the batch over, it has {mesh.axis_names}")
    return mesh


def _check_positive(name: str, value: Any, allow_zero: bool = False) -> None:
    v = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(v)) or np.any(v < 0) or (not allow_zero and np.any(v == 0)):
        raise ValueError(f"{name} must be a finite {'non-negative' if allow_zero else 'positive'} number, "
                         f"got {value!r}")
