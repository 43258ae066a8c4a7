"""Collaborative filtering on your own ratings (fastai's ``CollabDataLoaders.from_df`` / ``from_csv``): any
table with a user, an item and a rating column becomes the DataLoaders lesson 5's models train on.

As :func:`jaxlearn.collab.collab_loaders` does for MovieLens, the original ids (any hashable: strings,
integers) are remapped to contiguous indices, in sorted order, over the whole table, so that every user and
item of the validation set has an embedding row. Two splits:

* ``'random'``: the lesson's ``get_cv_idxs`` (:func:`~jaxlearn.collab.movielens.split_ratings`), a seeded
  random ``valid_pct`` of the ratings;
* ``'per_user'``: ``valid_pct`` of each user's ratings (rounded, at most all but one), so every validation user
  was seen in training; a user with one rating stays in training.

pandas is an optional dependency (``pip install 'jaxlearn[tabular]'``), imported when these are called.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxlearn.collab.movielens import split_ratings
from jaxlearn.data import DataFileError, DataLoaders, identity

SPLITS = ("random", "per_user")
"""The validation splits :func:`collab_from_df` knows (see the module)."""


def require_pandas() -> Any:
    """The pandas module, or an ImportError saying how to install it."""
    try:
        import pandas
    except ImportError as e:
        raise ImportError("loading your own tables needs pandas: pip install 'jaxlearn[tabular]'") from e
    return pandas


def read_table(path: str | os.PathLike, **read_csv_kwargs: Any) -> Any:
    """``pandas.read_csv(path, **read_csv_kwargs)``; a missing, unreadable or empty file is a
    :class:`~jaxlearn.data.DataFileError` naming it."""
    pd = require_pandas()
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"missing data file {path}: expected a CSV table with a header row")
    try:
        return pd.read_csv(path, **read_csv_kwargs)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataFileError(f"corrupt data file {path}: pandas.read_csv cannot read it ({e})") from e


def check_columns(df: Any, names: list[str], source: str) -> None:
    """Every column of ``names`` is in ``df``, and ``df`` has rows; otherwise a DataFileError naming the
    missing column and listing those there are (``source`` names the table)."""
    missing = [name for name in names if name not in df.columns]
    if missing:
        raise DataFileError(f"{source} has no column {missing[0]!r}: its columns are {list(df.columns)}")
    if len(df) == 0:
        raise DataFileError(f"{source} has no rows")


def row_label(df: Any, position: int) -> Any:
    """The index label of row ``position`` of ``df``, as a plain Python value for messages."""
    return df.index[position:position + 1].tolist()[0]


def numeric_column(df: Any, name: str, source: str, allow_missing: bool = False) -> np.ndarray:
    """Column ``name`` of ``df`` as float64; a value that is not a number (or is missing, unless
    ``allow_missing``) is a DataFileError naming its row (the frame's index label) and ``source``."""
    pd = require_pandas()
    column = df[name]
    values = pd.to_numeric(column, errors="coerce")
    bad = (values.isna() & (column.notna() | (not allow_missing))).to_numpy()
    if bad.any():
        position = int(np.argmax(bad))
        value = column.iloc[position]
        what = "missing" if pd.isna(value) else f"{value!r}, not a number"
        raise DataFileError(f"{source}: column {name!r} at row {row_label(df, position)!r} is {what}")
    return values.to_numpy(np.float64, na_value=np.nan)


def contiguous_ids(df: Any, name: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, ids)``: column ``name`` of ``df`` remapped to int32 codes 0..n-1 with ``ids[code]`` the
    original id (sorted; mixed types are sorted by type first, as ``pandas.factorize(sort=True)`` does). A
    missing id is a DataFileError naming its row and ``source``."""
    pd = require_pandas()
    codes, ids = pd.factorize(df[name], sort=True)
    if (codes < 0).any():
        row = row_label(df, int(np.argmax(codes < 0)))
        raise DataFileError(f"{source}: column {name!r} at row {row!r} is missing (every rating needs an id)")
    return codes.astype(np.int32), np.asarray(ids)


def per_user_split(users: np.ndarray, valid_pct: float, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, valid_idx)`` positions, from ``users`` (each rating's contiguous user index): of each
    user's n ratings, a random (``seed``) ``min(round(valid_pct·n), n−1)`` go to validation (rounded half up),
    so every validation user also has training ratings. Both sorted."""
    if not 0.0 < valid_pct < 1.0:
        raise ValueError(f"valid_pct must be in (0, 1), got {valid_pct}")
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(users))
    order = order[np.argsort(users[order], kind="stable")]  # grouped by user, shuffled within each user
    starts = np.searchsorted(users[order], np.arange(users.max() + 1))
    counts = np.bincount(users)
    n_valid = np.minimum(np.floor(valid_pct * counts + 0.5), counts - 1).astype(int)
    rank = np.arange(len(users)) - np.repeat(starts, counts)  # position of each rating within its user
    is_valid = rank < np.repeat(n_valid, counts)
    return np.sort(order[~is_valid]), np.sort(order[is_valid])


def collab_from_df(df: Any, user: str = "user", item: str = "item", rating: str = "rating",
                   valid_pct: float = 0.2, split: str = "random", seed: int = 42, batch_size: int = 64,
                   source: str = "the DataFrame") -> DataLoaders:
    """Lesson 5's DataLoaders from your own ratings: x int32 (N, 2) ``[user, item]`` indices, y float32
    ratings (the layout of :func:`jaxlearn.collab.collab_loaders`, so ``EmbeddingDotBias(n_users, n_items,
    y_range=...)`` trains on it).

    ``dls.info``: ``n_users``, ``n_items``, ``rating_range`` (min, max), ``user_ids`` / ``item_ids`` (index →
    original id), ``user_index`` / ``item_index`` (original id → index) and ``valid_idx`` (the validation rows'
    positions in ``df``).

    Args:
        df: a pandas DataFrame, one rating per row.
        user: the column of user ids (any hashable: strings, integers).
        item: the column of item ids.
        rating: the column of ratings (numbers; a missing or non-numeric one is an error naming its row).
        valid_pct: the share of the ratings for validation.
        split: ``'random'`` or ``'per_user'`` (see the module).
        seed: seeds the split.
        batch_size: training ratings per batch (validation: twice as many).
        source: names the table in error messages.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(map(repr, SPLITS))}")
    check_columns(df, [user, item, rating], source)
    ratings = numeric_column(df, rating, source).astype(np.float32)
    users, user_ids = contiguous_ids(df, user, source)
    items, item_ids = contiguous_ids(df, item, source)
    train, valid = per_user_split(users, valid_pct, seed) if split == "per_user" \
        else split_ratings(len(df), valid_pct, seed)
    if len(valid) == 0:
        why = "no user has enough ratings to give one" if split == "per_user" else f"{len(df)} ratings"
        raise DataFileError(f"{source}: the validation set would be empty (split {split!r}, valid_pct "
                            f"{valid_pct}: {why}); use more ratings or a larger valid_pct")
    x = np.stack([users, items], axis=1)
    dls = DataLoaders.from_arrays((x[train], ratings[train]), (x[valid], ratings[valid]), batch_size,
                                  transform=identity)
    dls.info.update(n_users=len(user_ids), n_items=len(item_ids),
                    rating_range=(float(ratings.min()), float(ratings.max())), user_ids=user_ids,
                    item_ids=item_ids, user_index={u: i for i, u in enumerate(user_ids.tolist())},
                    item_index={m: i for i, m in enumerate(item_ids.tolist())}, valid_idx=valid)
    return dls


def collab_from_csv(path: str | os.PathLike, user: str = "user", item: str = "item", rating: str = "rating",
                    valid_pct: float = 0.2, split: str = "random", seed: int = 42, batch_size: int = 64,
                    **read_csv_kwargs: Any) -> DataLoaders:
    """:func:`collab_from_df` of ``pandas.read_csv(path, **read_csv_kwargs)``; errors name the file. ``user``,
    ``item``, ``rating``, ``valid_pct``, ``split``, ``seed`` and ``batch_size`` as there."""
    df = read_table(path, **read_csv_kwargs)
    return collab_from_df(df, user, item, rating, valid_pct, split, seed, batch_size, source=f"data file {path}")
