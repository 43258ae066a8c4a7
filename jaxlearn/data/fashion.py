"""Fashion-MNIST through tensorflow-datasets (offline: point ``JAXLEARN_FASHION_MNIST_DIR`` at the four official
IDX ``.gz`` files; they are checked before tfds sees them, so a bad file is named), as arrays or
:class:`~jaxlearn.data.DataLoaders`, with the class names and the pixel statistics lesson 17 normalizes with.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import os
import shutil
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from jaxlearn.data.arrays import DataLoaders
from jaxlearn.data.files import DataFileError, cache_dir, one_line, quiet_tensorflow, require_download_host

FASHION_MNIST_MEAN = 0.28
"""The training images' mean pixel, on the [0, 1] scale: what lesson 17 normalizes with
(``BatchTransformCB(normalize(FASHION_MNIST_MEAN, FASHION_MNIST_STD))``)."""
FASHION_MNIST_STD = 0.35
"""The training images' pixel standard deviation, on the [0, 1] scale (lesson 17's 0.35)."""


FASHION_MNIST_ENV = "JAXLEARN_FASHION_MNIST_DIR"
"""The environment variable naming a folder with the four official IDX ``.gz`` files: read offline instead of
downloading (:func:`fashion_mnist`'s ``manual_dir`` default)."""


FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
"""The ten class names, by label (0 = T-shirt/top ... 9 = Ankle boot); ``dls.info['classes']`` of
:func:`fashion_mnist_loaders`."""


# (file name, IDX magic number, dims after the count) for each split's images and labels.
_FASHION_FILES = {
    "train": (("train-images-idx3-ubyte.gz", 2051, (28, 28)), ("train-labels-idx1-ubyte.gz", 2049, ())),
    "test": (("t10k-images-idx3-ubyte.gz", 2051, (28, 28)), ("t10k-labels-idx1-ubyte.gz", 2049, ())),
}


_FASHION_COUNTS = {"train": 60_000, "test": 10_000}


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


def _require_download_host(url: str) -> None:
    """Fail in seconds, naming the offline alternative, when the download host (or the proxy that reaches
    it) does not answer: tfds would retry for minutes, or wait forever on a silent proxy, then raise a
    ConnectionError that names neither."""
    require_download_host(url, "Fashion-MNIST", f"set {FASHION_MNIST_ENV} to a folder holding the four official "
                                                f"files: {', '.join(_fashion_file_names())}")


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


@contextlib.contextmanager
def _one_process_at_a_time(data_dir: Path):
    """Several processes loading at once (a test suite's workers, two experiments) prepare the cache once: the
    others wait for it, then read it (an advisory lock on a file beside it)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / ".jaxlearn-prepare.lock", "w") as lock:
        with contextlib.suppress(OSError):  # a file system without locks: as before, one process at a time or luck
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _from_prepared_cache(tfds: Any, data_dir: Path, manual_dir: str | None
                         ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read Fashion-MNIST from tfds' prepared data in ``data_dir``, preparing it first if needed (one process at
    a time). Prepared data that fails to read (a truncated or bit-flipped record file, a damaged dataset_info.json)
    is deleted and prepared again, once; if that fails too, the error names the cache."""
    with _one_process_at_a_time(data_dir):
        return _read_or_prepare(tfds, data_dir, manual_dir)


def _read_or_prepare(tfds: Any, data_dir: Path, manual_dir: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    prepared = data_dir / "fashion_mnist"
    if prepared.exists():
        try:
            return _prepare_and_read(tfds, data_dir, manual_dir)
        except DataFileError:
            raise
        except Exception as e:  # tensorflow's DataLossError, tfds' JSON / protobuf errors: all mean unreadable
            warnings.warn(f"the prepared Fashion-MNIST cache {prepared} is unreadable ({one_line(e)}): deleting it "
                          f"and preparing it again", stacklevel=3)
            shutil.rmtree(prepared)
    try:
        return _prepare_and_read(tfds, data_dir, manual_dir)
    except DataFileError:
        raise
    except Exception as e:
        raise DataFileError(f"preparing Fashion-MNIST in the cache {prepared} failed ({one_line(e)}); delete "
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
    quiet_tensorflow()
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


def fashion_mnist_loaders(batch_size: int = 256, seed: int = 0, manual_dir=None, drop_last: bool = False,
                          n_train: int | None = None) -> DataLoaders:
    """Fashion-MNIST train / test as :class:`DataLoaders` (``n_train`` takes a prefix, for quick runs).

    The test split is the validation set; pixels become floats in [0, 1] (``to_float``) and ``dls.info['classes']``
    holds :data:`FASHION_MNIST_CLASSES`. ``batch_size`` (default 256): the training batch size (validation batches
    are twice that). ``seed`` (default 0): the training set's shuffling seed. ``manual_dir``: the folder of the four
    IDX files, as :func:`fashion_mnist`'s (default ``$JAXLEARN_FASHION_MNIST_DIR``, else a download).
    ``drop_last`` (default False): skip the training examples past the last whole batch instead of padding it.
    """
    splits = fashion_mnist(manual_dir)
    x, y = splits["train"]
    if n_train is not None:
        x, y = x[:n_train], y[:n_train]
    dls = DataLoaders.from_arrays((x, y), splits["test"], batch_size, seed=seed, drop_last=drop_last)
    dls.info["classes"] = FASHION_MNIST_CLASSES
    return dls

