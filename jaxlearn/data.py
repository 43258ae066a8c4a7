"""Datasets and device-resident batching.

* Fashion-MNIST through tensorflow-datasets (offline: point ``JAXLEARN_FASHION_MNIST_DIR`` at the four
  official IDX ``.gz`` files; they are checked before tfds sees them, so a bad file is named).
* makemore's names (Karpathy, makemore part 3): vocabulary, context windows, the lecture's 80/10/10 split.
* :class:`ArrayDataset` / :class:`DataLoaders`: the whole dataset lives on the device; an epoch is a matrix of
  example indices that the compiled step gathers from, so no batch is ever copied from the host.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import os
import random
import shutil
import socket
import struct
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FASHION_MNIST_ENV = "JAXLEARN_FASHION_MNIST_DIR"
NAMES_ENV = "JAXLEARN_NAMES_PATH"
CACHE_ENV = "JAXLEARN_CACHE_DIR"
NAMES_URL = "https://raw.githubusercontent.com/karpathy/makemore/master/names.txt"

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# (file name, IDX magic number, dims after the count) for each split's images and labels.
_FASHION_FILES = {
    "train": (("train-images-idx3-ubyte.gz", 2051, (28, 28)), ("train-labels-idx1-ubyte.gz", 2049, ())),
    "test": (("t10k-images-idx3-ubyte.gz", 2051, (28, 28)), ("t10k-labels-idx1-ubyte.gz", 2049, ())),
}
_FASHION_COUNTS = {"train": 60_000, "test": 10_000}
_CONNECT_TIMEOUT_S = 3.0  # to the download host before tfds (which retries for minutes)


class DataFileError(ValueError):
    """A data file is missing, unreadable or not what it should be; the message names the file."""


def cache_dir() -> Path:
    """Where downloads and the prepared tfds data go: ``$JAXLEARN_CACHE_DIR`` or ``~/.cache/jaxlearn``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "jaxlearn"))


# ---------------------------------------------------------------------------------------------- IDX files

def read_idx(path: str | os.PathLike, magic: int, dims: tuple[int, ...], count: int) -> np.ndarray:
    """Read and check one gzipped IDX file (LeCun's format: big-endian magic, counts, then uint8 data)."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"missing data file {path}: expected the official Fashion-MNIST IDX file; "
                            f"set {FASHION_MNIST_ENV} to the folder holding the four .gz files")
    n_dims = 1 + len(dims)
    expected_header = (magic, count, *dims)
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataFileError(f"corrupt data file {path}: not a readable gzip stream ({e}); "
                            f"expected a gzipped IDX file with header {expected_header}") from e
    header_len = 4 * (1 + n_dims)
    if len(raw) < header_len:
        raise DataFileError(f"corrupt data file {path}: {len(raw)} bytes, too short for an IDX header "
                            f"{expected_header}")
    header = struct.unpack(f">{1 + n_dims}I", raw[:header_len])
    if header != expected_header:
        raise DataFileError(f"wrong data file {path}: IDX header (magic, count, dims) is {header}, "
                            f"expected {expected_header}")
    body = np.frombuffer(raw, dtype=np.uint8, offset=header_len)
    if body.size != count * int(np.prod(dims, dtype=int)):
        raise DataFileError(f"corrupt data file {path}: {body.size} data bytes, expected "
                            f"{count} x {dims} = {count * int(np.prod(dims, dtype=int))}")
    return body.reshape(count, *dims)


def check_fashion_mnist_dir(manual_dir: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Validate the four IDX files in ``manual_dir``; returns ``{split: (images NHWC uint8, labels int32)}``."""
    splits = {}
    for split, ((img_name, img_magic, img_dims), (lbl_name, lbl_magic, _)) in _FASHION_FILES.items():
        n = _FASHION_COUNTS[split]
        images = read_idx(Path(manual_dir) / img_name, img_magic, img_dims, n)
        labels = read_idx(Path(manual_dir) / lbl_name, lbl_magic, (), n)
        if labels.max() > 9:
            raise DataFileError(f"corrupt data file {Path(manual_dir) / lbl_name}: label {labels.max()} "
                                f"outside 0..9")
        splits[split] = (images[..., None], labels.astype(np.int32))
    return splits


def _fashion_file_names() -> list[str]:
    return [name for files in _FASHION_FILES.values() for name, _, _ in files]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_key(checksums: dict[str, str]) -> str:
    """12 hex digits of the four source files' sha256: the name of the prepared data made from them."""
    return hashlib.sha256("".join(checksums[name] for name in sorted(checksums)).encode()).hexdigest()[:12]


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def _require_download_host(url: str) -> None:
    """Fail in seconds, naming the offline alternative, when the download host (or the proxy that reaches
    it) cannot be reached: tfds would retry for minutes, then raise a ConnectionError that names neither."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    target = urllib.parse.urlsplit(proxy) if proxy and not urllib.request.proxy_bypass(parts.hostname) else parts
    address = (target.hostname, target.port or (443 if target.scheme == "https" else 80))
    try:
        socket.create_connection(address, timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise DataFileError(f"cannot download Fashion-MNIST: {address[0]}:{address[1]} is unreachable ({e}). "
                            f"Offline, set {FASHION_MNIST_ENV} to a folder holding the four official files: "
                            f"{', '.join(_fashion_file_names())}") from e


def _prepare_and_read(tfds: Any, data_dir: Path, manual_dir: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    builder = tfds.builder("fashion_mnist", data_dir=str(data_dir))
    if manual_dir is None and not builder.is_prepared():
        _require_download_host(builder.URL)
    # from local files there is nothing to fetch, not even tfds' prepared copy on GCS
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False) if manual_dir else None
    builder.download_and_prepare(download_config=config)
    out = {}
    for split in ("train", "test"):
        arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        out[split] = (np.asarray(arrays["image"], np.uint8), np.asarray(arrays["label"], np.int32))
    return out


def _from_prepared_cache(tfds: Any, data_dir: Path, manual_dir: str | None
                         ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read Fashion-MNIST from tfds' prepared data in ``data_dir``, preparing it first if needed. Prepared
    data that fails to read (a truncated or bit-flipped record file, a damaged dataset_info.json) is deleted
    and prepared again, once; if that fails too, the error names the cache."""
    prepared = data_dir / "fashion_mnist"
    if prepared.exists():
        try:
            return _prepare_and_read(tfds, data_dir, manual_dir)
        except DataFileError:
            raise
        except Exception as e:  # tensorflow's DataLossError, tfds' JSON / protobuf errors: all mean unreadable
            warnings.warn(f"the prepared Fashion-MNIST cache {prepared} is unreadable ({_one_line(e)}): deleting it "
                          f"and preparing it again", stacklevel=3)
            shutil.rmtree(prepared)
    try:
        return _prepare_and_read(tfds, data_dir, manual_dir)
    except DataFileError:
        raise
    except Exception as e:
        raise DataFileError(f"preparing Fashion-MNIST in the cache {prepared} failed ({_one_line(e)}); delete "
                            f"that folder to start over") from e


def fashion_mnist(manual_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
                  use_tfds: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST as ``{'train': (x, y), 'test': (x, y)}``: x uint8 (N, 28, 28, 1), y int32 (N,).

    Goes through ``tfds.builder('fashion_mnist')``. ``manual_dir`` (or ``$JAXLEARN_FASHION_MNIST_DIR``)
    holds the official IDX files for offline machines; without it tfds downloads as usual (an unreachable
    download host fails in seconds, naming the variable). The prepared dataset is cached under ``data_dir``
    (default ``cache_dir()/tfds/<key>``, the key a hash of the four files' sha256, so other files never meet
    data prepared from old ones); an unreadable cache is prepared again. tfds prepares only the official
    files (it checks their sha256): IDX files that differ are read directly, with a warning. ``use_tfds=False``
    (or a machine without tensorflow-datasets) reads the checked IDX files directly.
    """
    manual_dir = manual_dir or os.environ.get(FASHION_MNIST_ENV)
    checked = check_fashion_mnist_dir(manual_dir) if manual_dir else None
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        tfds = None
    if not use_tfds or tfds is None:
        if checked is None:
            raise DataFileError(f"tensorflow-datasets is not installed and {FASHION_MNIST_ENV} is not set: "
                                "point it at the folder holding the four Fashion-MNIST .gz files")
        return checked
    official = {info.filename: info.checksum for info in tfds.builder_cls("fashion_mnist").url_infos.values()}
    # downloads are checked by tfds against the official sha256, local files are hashed here (30 MB: ~0.04 s)
    sources = {name: _sha256(Path(manual_dir) / name) for name in official} if manual_dir else official
    differ = [name for name in sorted(official) if sources[name] != official[name]]
    if differ:
        warnings.warn(f"{', '.join(differ)} in {manual_dir} differ from the official Fashion-MNIST files (sha256), "
                      f"which are all tensorflow-datasets prepares: reading the four IDX files directly (checked, "
                      f"in file order rather than tfds' shuffled order, not cached)", stacklevel=2)
        return checked
    data_dir = Path(data_dir) if data_dir else cache_dir() / "tfds" / _cache_key(sources)
    return _from_prepared_cache(tfds, data_dir, str(manual_dir) if manual_dir else None)


# ------------------------------------------------------------------------------------------------ names

def load_names(path: str | os.PathLike | None = None) -> list[str]:
    """makemore's 32,033 names: from ``path``, ``$JAXLEARN_NAMES_PATH``, or downloaded once to the cache."""
    path = path or os.environ.get(NAMES_ENV)
    if path is None:
        path = cache_dir() / "names.txt"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            urllib.request.urlretrieve(NAMES_URL, tmp)
            tmp.rename(path)  # a broken download never leaves a half file under the real name
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"missing data file {path}: expected makemore's names.txt (one name per line); "
                            f"set {NAMES_ENV} to its path")
    try:
        words = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as e:
        raise DataFileError(f"corrupt data file {path}: not readable as UTF-8 text ({e}); expected makemore's "
                            f"names.txt, lowercase a-z names one per line") from e
    bad = next((w for w in words if not w.isascii() or not w.isalpha() or not w.islower()), None)
    if not words or bad is not None:
        raise DataFileError(f"corrupt data file {path}: expected lowercase a-z names one per line, "
                            f"found {bad!r}" if words else f"corrupt data file {path}: it holds no names")
    return words


@dataclass(frozen=True)
class Vocab:
    """Characters ↔ integers; '.' (0) marks both the start and the end of a name."""
    itos: tuple[str, ...]

    @classmethod
    def from_words(cls, words: Sequence[str]) -> "Vocab":
        return cls((".",) + tuple(sorted(set("".join(words)))))

    @property
    def stoi(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, word: str) -> list[int]:
        stoi = self.stoi
        return [stoi[c] for c in word]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.itos[i] for i in ids)


def context_windows(words: Sequence[str], vocab: Vocab, block_size: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Every (previous ``block_size`` characters → next character) pair, left-padded with '.' (makemore)."""
    xs, ys = [], []
    stoi = vocab.stoi
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            ix = stoi[ch]
            xs.append(context)
            ys.append(ix)
            context = context[1:] + [ix]
    return np.array(xs, dtype=np.int32).reshape(-1, block_size), np.array(ys, dtype=np.int32)


def names_splits(words: Sequence[str], block_size: int = 3, seed: int = 42
                 ) -> tuple[Vocab, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The lecture's split: ``random.seed(42); random.shuffle(words)``, then 80% / 10% / 10% of the words.

    With the 32,033 names and block_size 3 this gives 182,625 / 22,655 / 22,866 examples.
    """
    vocab = Vocab.from_words(words)
    words = list(words)
    random.Random(seed).shuffle(words)  # same sequence as the lecture's global random.seed(42)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    parts = {"train": words[:n1], "valid": words[n1:n2], "test": words[n2:]}
    return vocab, {k: context_windows(v, vocab, block_size) for k, v in parts.items()}


# -------------------------------------------------------------------------------------------- batching

def to_float(x):
    """uint8 pixels → float32 in [0, 1]; other dtypes pass through (e.g. makemore's token ids). Inputs may be
    a pytree of arrays (e.g. ``(categorical codes, continuous columns)``)."""
    return jax.tree.map(lambda a: a.astype(jnp.float32) / 255.0 if a.dtype == jnp.uint8 else a, x)


def identity(x):
    """The transform of inputs already in the model's form (token ids, ratings' user/item indices)."""
    return x


@dataclass(frozen=True, eq=False)
class Normalize:
    """``(x - mean) / std``; an object rather than a closure so that an exported Learner pickles it."""
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

    ``x`` is an array or a pytree of arrays with one leading example axis. ``epoch_indices(epoch)`` returns
    ``(idx, weight)`` of shape (n_batches, batch_size): with ``drop_last=False`` the last batch is padded with
    index 0 and weight 0, so every example is seen exactly once with weight 1 and every batch has one static
    shape (no recompilation for a ragged last batch). ``batches_per_epoch`` instead draws that many batches
    with replacement each epoch (makemore's ``torch.randint`` minibatches).
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
        self.x, self.y = jax.tree.map(jnp.asarray, self.x), jnp.asarray(self.y)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def n_batches(self) -> int:
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
    """A dataset's shuffle key from a run's seed and the dataset's own, made on the device (no transfer)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _SHUFFLE_STREAM), dataset_seed)


def check_compatible(train: ArrayDataset, valid: ArrayDataset) -> None:
    """Train and valid sets must agree per example (shapes, dtypes), or one model cannot take both."""
    for what, a, b in (("inputs", train.x, valid.x), ("labels", train.y, valid.y)):
        sig_a, sig_b = (jax.tree.map(lambda v: f"{tuple(v.shape[1:])} {v.dtype}", t) for t in (a, b))
        if sig_a != sig_b:
            raise ValueError(f"train and valid {what} differ: per example {sig_a} vs {sig_b}")


def check_like(x: Any, ds: ArrayDataset) -> tuple[Any, bool]:
    """Raw inputs for prediction, checked against the training data ``ds``: returns ``(x, single)`` with a
    batch axis (added when ``x`` is one example: ``single``). The same dtype and range as the training inputs
    are expected, so the dataset's transform applies as in training: uint8 pixels may also come as floats
    already scaled to [0, 1], not as floats in 0..255. Errors say what differs."""
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
            a = a.astype(r.dtype)
        out.append(a)
    return jax.tree.unflatten(jax.tree.structure(x), out), single


@dataclass
class DataLoaders:
    """The training and validation datasets of a fit (miniai's ``DataLoaders``).

    ``info`` carries what a dataset needs besides its arrays (e.g. the names' ``vocab`` and ``test`` split).
    """
    train: ArrayDataset
    valid: ArrayDataset
    info: dict = field(default_factory=dict)

    @classmethod
    def from_arrays(cls, train: tuple, valid: tuple, batch_size: int, valid_batch_size: int | None = None,
                    seed: int = 0, drop_last: bool = False,
                    transform: Callable[[jax.Array], jax.Array] = to_float) -> "DataLoaders":
        return cls(ArrayDataset(*train, batch_size, shuffle=True, drop_last=drop_last, seed=seed,
                                transform=transform),
                   ArrayDataset(*valid, min(valid_batch_size or 2 * batch_size, len(valid[0])),
                                transform=transform))


def fashion_mnist_loaders(batch_size: int = 256, seed: int = 0, manual_dir=None, drop_last: bool = False,
                          n_train: int | None = None) -> DataLoaders:
    """Fashion-MNIST train / test as :class:`DataLoaders` (``n_train`` takes a prefix, for quick runs)."""
    splits = fashion_mnist(manual_dir)
    x, y = splits["train"]
    if n_train is not None:
        x, y = x[:n_train], y[:n_train]
    dls = DataLoaders.from_arrays((x, y), splits["test"], batch_size, seed=seed, drop_last=drop_last)
    dls.info["classes"] = FASHION_MNIST_CLASSES
    return dls


def names_loaders(batch_size: int = 32, seed: int = 0, block_size: int = 3, path=None,
                  split_seed: int = 42, batches_per_epoch: int | None = None) -> DataLoaders:
    """makemore's names as :class:`DataLoaders`: the lecture's train / valid split of context windows.

    ``batches_per_epoch`` draws that many training batches with replacement per epoch (the lecture's
    ``torch.randint`` minibatches) instead of shuffled passes. ``dls.info`` holds ``vocab``, ``block_size``
    and the ``test`` split (x, y).
    """
    vocab, splits = names_splits(load_names(path), block_size=block_size, seed=split_seed)
    dls = DataLoaders.from_arrays(splits["train"], splits["valid"], batch_size, seed=seed)
    if batches_per_epoch is not None:
        dls.train = dataclasses.replace(dls.train, batches_per_epoch=batches_per_epoch)
    dls.info.update(vocab=vocab, block_size=block_size, test=splits["test"])
    return dls


DATASETS: dict[str, Callable[..., DataLoaders]] = {"fashion_mnist": fashion_mnist_loaders, "names": names_loaders}


def load_dataset(name: str, **kwargs) -> DataLoaders:
    """:class:`DataLoaders` for a dataset by name: ``'fashion_mnist'`` or ``'names'`` (makemore).

    ``kwargs`` go to :func:`fashion_mnist_loaders` / :func:`names_loaders` (``batch_size``, ``seed``, ...).
    """
    if not isinstance(name, str) or name not in DATASETS:
        import difflib
        known = ", ".join(map(repr, DATASETS))
        close = difflib.get_close_matches(str(name).lower().replace("-", "_"), DATASETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown dataset {name!r}{hint}: known datasets are {known}")
    return DATASETS[name](**kwargs)
