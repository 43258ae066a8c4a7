"""CIFAR-10 (fast.ai 2018 lesson 7, "CIFAR-10 from scratch") through tensorflow-datasets, as arrays or
:class:`~jaxlearn.data.DataLoaders`, with its class names, its own per-channel statistics and the lesson's
augmentation (random horizontal flip, pad 4 + random 32×32 crop) as Learner callbacks.

Offline: point ``JAXLEARN_CIFAR10_DIR`` at a folder holding ``cifar-10-binary.tar.gz``, the release
tensorflow-datasets prepares CIFAR-10 from (https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxlearn.callback import Callback
from jaxlearn.callbacks import BatchTransformCB
from jaxlearn.data import DataLoaders, normalize
from jaxlearn.data.files import DataFileError, cache_dir, one_line, quiet_tensorflow, require_download_host
from jaxlearn.vision.augment import AugmentCB, flip, pad_crop

__all__ = ["CIFAR10_ENV", "CIFAR10_FILE", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR10_CLASSES", "cifar10",
           "cifar10_loaders", "cifar10_callbacks"]

CIFAR10_ENV = "JAXLEARN_CIFAR10_DIR"
"""The environment variable naming a folder holding :data:`CIFAR10_FILE`: prepared offline instead of downloaded
(:func:`cifar10`'s ``manual_dir`` default)."""

CIFAR10_FILE = "cifar-10-binary.tar.gz"
"""The file tensorflow-datasets prepares CIFAR-10 from (the binary release, not the python-pickle one)."""

CIFAR10_MEAN = (0.4914, 0.48216, 0.44653)
"""The training images' per-channel (R, G, B) mean on the [0, 1] scale: lesson 7's ``stats[0]``, the dataset's own
statistics it normalizes with (not ImageNet's)."""

CIFAR10_STD = (0.24703, 0.24349, 0.26159)
"""The training images' per-channel (R, G, B) standard deviation on the [0, 1] scale: lesson 7's ``stats[1]``."""

_READ_BATCH = 4096  # examples per tf.data batch while reading a split into numpy

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
"""The ten class names, by label (0 = airplane ... 9 = truck), as tfds and the lesson's folders name them."""


def _offline_hint() -> str:
    return f"set {CIFAR10_ENV} to a folder holding {CIFAR10_FILE} (https://www.cs.toronto.edu/~kriz/{CIFAR10_FILE})"


def _read_split(tfds: Any, builder: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    batches = list(tfds.as_numpy(builder.as_dataset(split=split).batch(_READ_BATCH)))
    return (np.concatenate([b["image"] for b in batches]).astype(np.uint8),
            np.concatenate([b["label"] for b in batches]).astype(np.int32))


def cifar10(manual_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None
            ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10 as ``{'train': (x, y), 'test': (x, y)}``: x uint8 (N, 32, 32, 3), y int32 (N,); 50,000 training
    and 10,000 test images.

    Goes through ``tfds.builder('cifar10')``. ``manual_dir`` (default ``$JAXLEARN_CIFAR10_DIR``) is a folder
    holding :data:`CIFAR10_FILE`, for offline machines; without it tfds downloads as usual (an unreachable download
    host fails in seconds, naming the variable). The prepared dataset is cached under ``data_dir`` (default
    ``cache_dir()/tfds``). A missing file or a failed preparation raises :class:`~jaxlearn.data.DataFileError`.
    """
    manual_dir = manual_dir or os.environ.get(CIFAR10_ENV)
    if manual_dir and not (Path(manual_dir) / CIFAR10_FILE).is_file():
        raise DataFileError(f"missing data file {Path(manual_dir) / CIFAR10_FILE}: expected CIFAR-10's binary "
                            f"release there ({CIFAR10_ENV} / manual_dir is {manual_dir})")
    quiet_tensorflow()
    import tensorflow_datasets as tfds
    builder = tfds.builder("cifar10", data_dir=str(data_dir or cache_dir() / "tfds"))
    if manual_dir is None and not builder.is_prepared():
        require_download_host(next(iter(builder.url_infos)), "CIFAR-10", _offline_hint())
    # from a local file there is nothing to fetch, not even tfds' prepared copy on GCS
    config = tfds.download.DownloadConfig(manual_dir=str(manual_dir), try_download_gcs=False) if manual_dir else None
    try:
        builder.download_and_prepare(download_config=config)
    except Exception as e:  # tfds' own errors (a bad checksum, a truncated archive) name no way out
        raise DataFileError(f"preparing CIFAR-10 in {builder.data_dir} failed ({one_line(e)}); check {CIFAR10_ENV} "
                            f"({manual_dir}), or delete that folder to start over") from e
    return {split: _read_split(tfds, builder, split) for split in ("train", "test")}


def cifar10_loaders(batch_size: int = 256, seed: int = 0, manual_dir: str | os.PathLike | None = None,
                    n_train: int | None = None, drop_last: bool = False,
                    data_dir: str | os.PathLike | None = None) -> DataLoaders:
    """CIFAR-10 train / test as :class:`DataLoaders` (lesson 7: bs 256); the test split is the validation set.

    Pixels become floats in [0, 1] (``to_float``); normalization and augmentation happen in the compiled step
    (:func:`cifar10_callbacks`). ``dls.info['classes']`` holds :data:`CIFAR10_CLASSES`.

    Args:
        batch_size: the training batch size (validation batches are twice that).
        seed: the training set's shuffling seed.
        manual_dir: the folder holding :data:`CIFAR10_FILE`, as :func:`cifar10`'s (default ``$JAXLEARN_CIFAR10_DIR``,
            else a download).
        n_train: train on the first ``n_train`` images only (quick runs); None: all 50,000.
        drop_last: skip the training examples past the last whole batch instead of padding it (BatchNorm then never
            sees the padding's repeated image).
        data_dir: where tfds keeps the prepared data, as :func:`cifar10`'s.
    """
    splits = cifar10(manual_dir, data_dir)
    x, y = splits["train"]
    if n_train is not None:
        x, y = x[:n_train], y[:n_train]
    dls = DataLoaders.from_arrays((x, y), splits["test"], batch_size, seed=seed, drop_last=drop_last)
    dls.info["classes"] = CIFAR10_CLASSES
    return dls


def cifar10_callbacks(augment: bool = True, pad: int = 4) -> list[Callback]:
    """Lesson 7's input pipeline as Learner callbacks: with ``augment``, a random horizontal flip and a random
    32×32 crop of the image padded by ``pad`` pixels (reflected, as fastai 0.7's ``pad=sz//8``), on the training
    batches only; then normalization with the dataset's own :data:`CIFAR10_MEAN` / :data:`CIFAR10_STD`."""
    norm = BatchTransformCB(normalize(np.asarray(CIFAR10_MEAN, np.float32), np.asarray(CIFAR10_STD, np.float32)))
    return [AugmentCB(flip(), pad_crop(pad, mode="reflect")), norm] if augment else [norm]
