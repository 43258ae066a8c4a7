"""Device-resident batching: :class:`ArrayDataset` / :class:`DataLoaders` hold the whole dataset on the
device; an epoch is a matrix of example indices that the compiled step gathers from, so no batch is ever
copied from the host. Inputs may be pytrees (``(categorical codes, continuous columns)``). Also the input
transforms (uint8 → float, normalization) and the checks of what enters a Learner.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn.checks import check_seed



def to_float(x):
    """The inputs ``x`` with uint8 pixels → float32 in [0, 1]; other dtypes pass through (e.g. makemore's token
    ids). Inputs may be a pytree of arrays (e.g. ``(categorical codes, continuous columns)``)."""
    return jax.tree.map(lambda a: a.astype(jnp.float32) / 255.0 if a.dtype == jnp.uint8 else a, x)


def identity(x):
    """The transform of inputs already in the model's form (token ids, ratings' user/item indices): ``x``
    unchanged."""
    return x


@dataclass(frozen=True, eq=False)
class Normalize:
    """``(x - mean) / std`` (made by :func:`normalize`); an object rather than a closure so that an exported
    Learner pickles it."""
    mean: Any
    std: Any

    def __call__(self, x: jax.Array) -> jax.Array:
        return (x - self.mean) / self.std


def normalize(mean: float | jax.Array, std: float | jax.Array) -> Normalize:
    """The input-normalization transform ``(x - mean) / std`` (lesson 17: Fashion-MNIST 0.28 / 0.35)."""
    if np.any(np.asarray(std) <= 0):
        raise ValueError(f"normalize: std must be positive, got {std}")
    return Normalize(mean, std)


@dataclass
class ArrayDataset:
    """A dataset held on the device, batched by index matrices that the compiled step gathers from.

    ``epoch_indices(epoch)`` returns ``(idx, weight)`` of shape (n_batches, batch_size): with ``drop_last=False``
    the last batch is padded with index 0 and weight 0, so every example is seen exactly once with weight 1 and
    every batch has one static shape (no recompilation for a ragged last batch).

    Args:
        x: the inputs, an array or a pytree of arrays with one leading example axis.
        y: the targets, one per example (class indices, ratings, next tokens...).
        batch_size: examples per batch (at most the number of examples).
        shuffle: a new order every epoch (the training set's); ``False``: the stored order.
        drop_last: skip the examples past the last whole batch instead of padding it.
        seed: the dataset's own seed, mixed into its shuffle key (:func:`shuffle_key`).
        transform: applied to each batch of inputs inside the compiled step (default :func:`to_float`; use
            :func:`identity` for token ids or indices).
        batches_per_epoch: instead of one pass, draw that many batches with replacement each epoch
            (makemore's ``torch.randint`` minibatches).
    """
    x: Any
    y: jax.Array
    batch_size: int
    shuffle: bool = False
    drop_last: bool = False
    seed: int = 0
    transform: Callable = field(default=to_float)
    batches_per_epoch: int | None = None

    def __post_init__(self):
        n = len(jax.tree.leaves(self.x)[0])
        if any(len(a) != n for a in jax.tree.leaves(self.x)) or len(self.y) != n:
            raise ValueError(f"x has {[len(a) for a in jax.tree.leaves(self.x)]} examples but y has {len(self.y)}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, (int, np.integer)) \
                or self.batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.batch_size > n:
            raise ValueError(f"batch_size {self.batch_size} is larger than the dataset ({n} examples)")
        if self.batches_per_epoch is not None and (not isinstance(self.batches_per_epoch, int)
                                                   or self.batches_per_epoch < 1):
            raise ValueError(f"batches_per_epoch must be a positive integer, got {self.batches_per_epoch!r}")
        check_seed(self.seed, "the dataset's seed")
        self.x, self.y = jax.tree.map(jnp.asarray, self.x), jnp.asarray(self.y)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def n_batches(self) -> int:
        """Batches per epoch: ``batches_per_epoch``, or the examples over ``batch_size`` (rounded down with
        ``drop_last``, else up)."""
        if self.batches_per_epoch is not None:
            return self.batches_per_epoch
        n, bs = len(self), self.batch_size
        return n // bs if self.drop_last else -(-n // bs)

    def epoch_indices(self, epoch: int | jax.Array, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Epoch ``epoch``'s ``(idx, weight)``; the shuffle uses ``key`` (the Learner passes one derived from
        its seed) or, without one, ``jax.random.key(self.seed)``."""
        key = jax.random.key(self.seed) if key is None else key
        if self.batches_per_epoch is not None:
            return _sampled_indices(len(self), self.batch_size, self.batches_per_epoch, key, epoch)
        return _epoch_indices(len(self), self.batch_size, self.n_batches, self.shuffle, key, epoch)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _epoch_indices(n: int, bs: int, n_batches: int, shuffle: bool, key: jax.Array, epoch: int | jax.Array):
    order = jax.random.permutation(jax.random.fold_in(key, epoch), n) if shuffle else jnp.arange(n)
    pad = n_batches * bs - n
    if pad >= 0:
        idx = jnp.concatenate([order, jnp.zeros(pad, order.dtype)])
        weight = jnp.concatenate([jnp.ones(n, jnp.float32), jnp.zeros(pad, jnp.float32)])
    else:  # drop_last: the examples past the last whole batch are skipped this epoch
        idx, weight = order[:n_batches * bs], jnp.ones(n_batches * bs, jnp.float32)
    return idx.reshape(n_batches, bs), weight.reshape(n_batches, bs)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _sampled_indices(n: int, bs: int, n_batches: int, key: jax.Array, epoch: int | jax.Array):
    idx = jax.random.randint(jax.random.fold_in(key, epoch), (n_batches, bs), 0, n, dtype=jnp.int32)
    return idx, jnp.ones((n_batches, bs), jnp.float32)


_SHUFFLE_STREAM = 2  # folded into a run's seed for the datasets' shuffling


@functools.partial(jax.jit, static_argnums=(0, 1))
def shuffle_key(seed: int, dataset_seed: int) -> jax.Array:
    """A dataset's shuffle key from a run's ``seed`` and the dataset's own (``dataset_seed``), made on the device
    (no transfer)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _SHUFFLE_STREAM), dataset_seed)


def check_compatible(train: ArrayDataset, valid: ArrayDataset) -> None:
    """The ``train`` and ``valid`` sets must agree per example (shapes, dtypes), or one model cannot take both."""
    for what, a, b in (("inputs", train.x, valid.x), ("labels", train.y, valid.y)):
        sig_a, sig_b = (jax.tree.map(lambda v: f"{tuple(v.shape[1:])} {v.dtype}", t) for t in (a, b))
        if sig_a != sig_b:
            raise ValueError(f"train and valid {what} differ: per example {sig_a} vs {sig_b}")


def _check_fits(a: np.ndarray, dtype: np.dtype) -> None:
    """Integer inputs must fit the training inputs' integer dtype: the cast would wrap them (300 → 44 as uint8)."""
    info, low, high = np.iinfo(dtype), int(a.min()), int(a.max())
    if low < info.min or high > info.max:
        raise ValueError(f"predict: these integer inputs range from {low} to {high}, outside the training inputs' "
                         f"dtype {np.dtype(dtype)}: expected {info.min}..{info.max}")


def check_like(x: Any, ds: ArrayDataset) -> tuple[Any, bool]:
    """Raw inputs for prediction, checked against the training data ``ds``: returns ``(x, single)`` with a
    batch axis (added when ``x`` is one example: ``single``). The same dtype and range as the training inputs
    are expected, so the dataset's transform applies as in training: uint8 pixels may also come as floats
    already scaled to [0, 1], not as floats in 0..255; integers of another dtype must fit the training dtype
    (0..255 for uint8 pixels; token or category ids of int32 data: int32's range). Errors say what differs."""
    # one training array: a (nested) list is data, not a pytree of inputs
    x = np.asarray(x) if isinstance(ds.x, jax.Array) else jax.tree.map(np.asarray, x)
    leaves, ref = jax.tree.leaves(x), jax.tree.leaves(ds.x)
    if jax.tree.structure(x) != jax.tree.structure(ds.x):
        raise ValueError(f"predict: inputs must have the structure of the training inputs "
                         f"{jax.tree.structure(ds.x)}, got {jax.tree.structure(x)}")
    single = all(a.shape == r.shape[1:] for a, r in zip(leaves, ref))
    if single:
        x = jax.tree.map(lambda a: a[None], x)
    out = []
    for a, r in zip(jax.tree.leaves(x), ref):
        if a.shape[1:] != r.shape[1:]:
            raise ValueError(f"predict: each example must have shape {tuple(r.shape[1:])} like the training "
                             f"inputs (or be a single such example), got an array of shape {a.shape}")
        if len(a) == 0:
            raise ValueError("predict: no inputs (an empty batch)")
        if r.dtype == np.uint8 and np.issubdtype(a.dtype, np.floating):
            if a.min() < 0 or a.max() > 1:
                raise ValueError(f"predict: the training images are uint8 (0..255, scaled to [0, 1] by the "
                                 f"dataset's transform) but these are floats in {a.min():g}..{a.max():g}: pass "
                                 f"uint8 pixels, or floats already scaled to [0, 1]")
        elif np.issubdtype(r.dtype, np.integer) != np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"predict: the training inputs are {r.dtype}, these are {a.dtype}")
        elif np.issubdtype(a.dtype, np.integer):
            _check_fits(a, r.dtype)
            a = a.astype(r.dtype)
        out.append(a)
    return jax.tree.unflatten(jax.tree.structure(x), out), single


@dataclass
class DataLoaders:
    """The training and validation datasets of a fit (miniai's ``DataLoaders``): ``train`` and ``valid``, two
    :class:`ArrayDataset`.

    ``info`` carries what a dataset needs besides its arrays (e.g. the names' ``vocab`` and ``test`` split, the
    ``classes``).
    """
    train: ArrayDataset
    valid: ArrayDataset
    info: dict = field(default_factory=dict)

    @classmethod
    def from_arrays(cls, train: tuple, valid: tuple, batch_size: int, valid_batch_size: int | None = None,
                    seed: int = 0, drop_last: bool = False,
                    transform: Callable[[jax.Array], jax.Array] = to_float) -> "DataLoaders":
        """DataLoaders from ``train = (x, y)`` and ``valid = (x, y)`` arrays (or pytrees of inputs).

        Args:
            train: the training inputs and targets, shuffled every epoch.
            valid: the validation inputs and targets, in order.
            batch_size: the training batch size.
            valid_batch_size: the validation batch size (default ``2 * batch_size``, at most the set's size).
            seed: the training set's own seed (:class:`ArrayDataset`).
            drop_last: skip the training examples past the last whole batch instead of padding it.
            transform: both sets' input transform (:func:`to_float`: uint8 pixels to [0, 1]; :func:`identity`:
                none).
        """
        return cls(ArrayDataset(*train, batch_size, shuffle=True, drop_last=drop_last, seed=seed,
                                transform=transform),
                   ArrayDataset(*valid, min(valid_batch_size or 2 * batch_size, len(valid[1])),
                                transform=transform))


