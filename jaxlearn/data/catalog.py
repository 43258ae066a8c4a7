"""Datasets by name: ``load_dataset('fashion_mnist')``, ``load_dataset('names')``, and any image-classification
dataset of tensorflow-datasets: ``load_dataset('mnist')``, ``load_dataset('cifar10')``, ..."""

from __future__ import annotations

from collections.abc import Callable

from jaxlearn.data.arrays import DataLoaders
from jaxlearn.data.fashion import fashion_mnist_loaders
from jaxlearn.data.names import names_loaders
from jaxlearn.data.tfds_images import check_name, tfds_image_loaders


DATASETS: dict[str, Callable[..., DataLoaders]] = {"fashion_mnist": fashion_mnist_loaders, "names": names_loaders}
"""The datasets with a loader of their own, by name; every other name goes to tensorflow-datasets."""


def load_dataset(name: str, **kwargs) -> DataLoaders:
    """:class:`DataLoaders` for a dataset by name: ``'fashion_mnist'``, ``'names'`` (makemore), or any
    tensorflow-datasets image-classification builder (:func:`~jaxlearn.data.tfds_images.tfds_image_loaders`).

    ``kwargs`` go to :func:`fashion_mnist_loaders` / :func:`names_loaders` / :func:`tfds_image_loaders`
    (``batch_size``, ``seed``, ``manual_dir``, ``data_dir``, ``n_train``, ...). An unknown name is a ValueError
    with the closest known name.
    """
    if isinstance(name, str) and name in DATASETS:
        return DATASETS[name](**kwargs)
    check_name(name, also_known=tuple(DATASETS))
    return tfds_image_loaders(name, **kwargs)
