"""Datasets by name: ``load_dataset('fashion_mnist')``, ``load_dataset('names')``."""

from __future__ import annotations

from collections.abc import Callable

from jaxlearn.data.arrays import DataLoaders
from jaxlearn.data.fashion import fashion_mnist_loaders
from jaxlearn.data.names import names_loaders


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

