"""Any image-classification dataset of tensorflow-datasets (``tfds.builder(name)``: 'mnist', 'cifar10',
'svhn_cropped', ...) as :class:`~jaxlearn.data.DataLoaders` of uint8 NHWC images and int32 labels, the way
:func:`~jaxlearn.data.fashion_mnist_loaders` gives Fashion-MNIST.

A dataset qualifies when its features hold an ``'image'`` (``tfds.features.Image`` of one fixed shape,
uint8) and a ``'label'`` (``tfds.features.ClassLabel``, whose names become ``dls.info['classes']``). The
training set is the ``'train'`` split; the validation set is the ``'validation'`` split when the builder names
one, otherwise ``'test'``. TensorFlow is imported only when a dataset is loaded.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from jaxlearn.data.arrays import DataLoaders
from jaxlearn.data.files import DataFileError, cache_dir, one_line, quiet_tensorflow, require_download_host

_READ_BATCH = 4096        # examples per tf.data batch while reading a split into numpy


def _tfds() -> Any:
    quiet_tensorflow()
    import tensorflow_datasets as tfds
    return tfds


@functools.cache
def builder_names() -> tuple[str, ...]:
    """Every dataset name tensorflow-datasets knows (``tfds.list_builders()``)."""
    return tuple(_tfds().list_builders())


def check_name(name: Any, also_known: Sequence[str] = ()) -> None:
    """A ValueError unless ``name`` (optionally with a ``/config`` and ``:version``) is a tfds builder or in
    ``also_known``, with the closest known name as a hint."""
    if isinstance(name, str) and (name in also_known or name.split(":")[0].split("/")[0] in builder_names()):
        return
    known = [*also_known, *builder_names()]
    close = difflib.get_close_matches(str(name).lower().replace("-", "_"), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = "".join(f"{n!r}, " for n in also_known) + ("and " if also_known else "")
    raise ValueError(f"unknown dataset {name!r}{hint}: known datasets are {listed}the image-classification "
                     f"datasets among tensorflow-datasets' {len(builder_names())} (tfds.list_builders())")


def check_image_classification(name: str, features: Any) -> None:
    """A ValueError unless ``features`` (those of the tfds dataset ``name``) hold a fixed-shape uint8 ``'image'``
    and a ClassLabel ``'label'``, naming the features there are."""
    tfds = _tfds()
    image, label = (features[key] if key in features.keys() else None for key in ("image", "label"))
    if not isinstance(image, tfds.features.Image) or not isinstance(label, tfds.features.ClassLabel):
        have = ", ".join(f"{key!r}: {type(value).__name__}" for key, value in features.items())
        raise ValueError(f"dataset {name!r} is not image classification: its features are {{{have}}}; expected an "
                         f"'image' (tfds.features.Image) and a 'label' (tfds.features.ClassLabel)")
    if None in image.shape or np.dtype(image.np_dtype) != np.uint8:
        raise ValueError(f"dataset {name!r}: its images are {image.np_dtype.__name__} of shape {image.shape}; "
                         f"load_dataset stacks uint8 images of one fixed shape (resize them with tfds first)")


def _require_download_host(name: str, builder: Any) -> None:
    """Fail in seconds, naming the offline alternatives, when the builder's download host (or the proxy that
    reaches it) does not answer: tfds would retry for minutes, or wait forever on a silent proxy, then raise an
    error that names neither."""
    urls = list(builder.url_infos or ()) or ["https://storage.googleapis.com"]  # tfds' own prepared copies
    files = ", ".join(info.filename for info in (builder.url_infos or {}).values())
    require_download_host(urls[0], f"the tfds dataset {name!r}",
                          f"pass data_dir= a folder where it is already prepared (tfds' <data_dir>/{builder.name}/"
                          f"{builder.version}), or manual_dir= a folder holding its source files"
                          + (f" ({files})" if files else ""))


def _read_split(tfds: Any, builder: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    batches = list(tfds.as_numpy(builder.as_dataset(split=split).batch(_READ_BATCH)))
    images = np.concatenate([b["image"] for b in batches]).astype(np.uint8)
    return images, np.concatenate([b["label"] for b in batches]).astype(np.int32)


def tfds_image_arrays(name: str, manual_dir: str | os.PathLike | None = None,
                      data_dir: str | os.PathLike | None = None
                      ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...]]:
    """``({split: (images uint8 (N, H, W, C), labels int32 (N,))}, classes)`` for the training split and the
    validation (or test) split of the tfds dataset ``name``, prepared under ``data_dir`` (default
    ``cache_dir()/tfds``) from the builder's downloads, or from the source files in ``manual_dir``."""
    tfds = _tfds()
    check_name(name)
    builder = tfds.builder(name, data_dir=str(data_dir or cache_dir() / "tfds"))
    check_image_classification(name, builder.info.features)
    if manual_dir is None and not builder.is_prepared():
        _require_download_host(name, builder)
    # from local files there is nothing to fetch, not even tfds' prepared copy on GCS
    config = tfds.download.DownloadConfig(manual_dir=str(manual_dir), try_download_gcs=False) if manual_dir else None
    try:
        builder.download_and_prepare(download_config=config)
    except Exception as e:  # tfds' own errors (bad checksums, missing manual files) name no way out
        raise DataFileError(f"preparing the tfds dataset {name!r} in {builder.data_dir} failed ({one_line(e)}); "
                            f"check manual_dir / data_dir, or delete that folder to start over") from e
    arrays = {split: _read_split(tfds, builder, split) for split in pick_splits(name, builder.info.splits)}
    return arrays, tuple(builder.info.features["label"].names)


def pick_splits(name: str, available: Collection[str]) -> tuple[str, str]:
    """``('train', 'validation')`` when the dataset ``name`` has a validation split among its ``available``
    ones, else ``('train', 'test')``. Splits are known once a dataset is prepared; none known (tfds' mock data)
    means the usual train / test."""
    available = set(available) or {"train", "test"}
    valid_split = "validation" if "validation" in available else "test"
    if "train" not in available or valid_split not in available:
        raise DataFileError(f"dataset {name!r} has the splits {sorted(available)}; expected 'train' and "
                            f"'validation' or 'test'")
    return "train", valid_split


def tfds_image_loaders(name: str, batch_size: int = 256, seed: int = 0, manual_dir: str | os.PathLike | None = None,
                       data_dir: str | os.PathLike | None = None, n_train: int | None = None,
                       drop_last: bool = False) -> DataLoaders:
    """The tfds image-classification dataset ``name`` (see :func:`tfds_image_arrays`, with ``manual_dir`` and
    ``data_dir``) as :class:`DataLoaders` (uint8 pixels, scaled to [0, 1] by the default transform);
    ``n_train`` takes a prefix of the training set, for quick runs. ``batch_size``, ``seed`` and ``drop_last``
    are :meth:`DataLoaders.from_arrays`'s. ``dls.info``: ``classes`` (the label names), ``name`` and ``splits``
    (training, validation).
    """
    arrays, classes = tfds_image_arrays(name, manual_dir, data_dir)
    (train_split, (x, y)), (valid_split, valid) = arrays.items()
    if n_train is not None:
        x, y = x[:n_train], y[:n_train]
    dls = DataLoaders.from_arrays((x, y), valid, batch_size, seed=seed, drop_last=drop_last)
    dls.info.update(classes=classes, name=name, splits=(train_split, valid_split))
    return dls
