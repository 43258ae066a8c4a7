"""Data: device-resident datasets and their batching (:mod:`~jaxlearn.data.arrays`), where files come from
(:mod:`~jaxlearn.data.files`), the lessons' two core datasets — Fashion-MNIST (:mod:`~jaxlearn.data.fashion`)
and makemore's names (:mod:`~jaxlearn.data.names`) — any tfds image-classification dataset
(:mod:`~jaxlearn.data.tfds_images`) and datasets by name (:mod:`~jaxlearn.data.catalog`). The
text and MovieLens data live with their lessons (:mod:`jaxlearn.text.data`, :mod:`jaxlearn.collab.movielens`).
TensorFlow is imported only when a tfds dataset is prepared."""

from jaxlearn.data.arrays import (ArrayDataset, DataLoaders, Normalize, check_compatible, check_like, identity,
                                  normalize, shuffle_key, to_float)
from jaxlearn.data.catalog import DATASETS, load_dataset
from jaxlearn.data.fashion import (FASHION_MNIST_CLASSES, FASHION_MNIST_ENV, FASHION_MNIST_MEAN, FASHION_MNIST_STD,
                                   check_fashion_mnist_dir, fashion_mnist, fashion_mnist_loaders, read_idx)
from jaxlearn.data.files import CACHE_ENV, DataFileError, cache_dir
from jaxlearn.data.names import (NAMES_ENV, NAMES_URL, Vocab, context_windows, load_names, names_loaders,
                                 names_splits)
from jaxlearn.data.tfds_images import tfds_image_arrays, tfds_image_loaders

__all__ = ["ArrayDataset", "DataLoaders", "Normalize", "check_compatible", "check_like", "identity", "normalize",
           "shuffle_key", "to_float", "DATASETS", "load_dataset", "FASHION_MNIST_CLASSES", "FASHION_MNIST_ENV",
           "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "check_fashion_mnist_dir", "fashion_mnist",
           "fashion_mnist_loaders", "read_idx", "CACHE_ENV", "DataFileError", "cache_dir", "NAMES_ENV",
           "NAMES_URL", "Vocab", "context_windows", "load_names", "names_loaders", "names_splits", "tfds_image_arrays",
           "tfds_image_loaders"]
