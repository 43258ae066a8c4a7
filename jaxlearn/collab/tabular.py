"""Tabular data from your own DataFrame or CSV for :class:`~jaxlearn.collab.models.TabularModel` (fast.ai 2018
lesson 4's Rossmann: ``proc_df``; fastai's ``TabularPandas``).

Every statistic is taken from the TRAINING rows only, then applied to every row (validation, and new rows
through ``dls.info['process']``), so nothing is learnt from the validation set:

* a categorical column is coded by its training levels, sorted: codes 0..cardinality−1, and −1 for a level
  never seen in training or a missing value (:class:`TabularModel` maps −1 to its extra "unknown" embedding
  row, as for :func:`jaxlearn.collab.tabular_loaders`; missing training values train that row, as
  ``proc_df``'s code 0 does);
* a continuous column's missing values are filled with the training median, and a ``<col>_na`` 0/1 column is
  added when the training rows had missing values (``proc_df``'s ``na_dict``); the filled column is then
  normalized with the training mean and standard deviation (``scale_vars``: population std, 1 for a constant
  column). The ``_na`` flags stay 0/1.

pandas is an optional dependency (``pip install 'jaxlearn[tabular]'``), imported when these are called.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxlearn.collab.movielens import split_ratings
from jaxlearn.collab.ratings import check_columns, numeric_column, read_table, require_pandas, row_label
from jaxlearn.data import DataFileError, DataLoaders, identity

TASKS = ("regression", "classification")
"""The tasks :func:`tabular_from_df` knows (``task=None`` picks one from the target column)."""


@dataclass(frozen=True)
class TabularProc:
    """The encoding fitted on the training rows (see the module); calling it on a DataFrame gives the pair
    ``(cats int32 (N, n_cat), conts float32 (N, n_cont))`` that :class:`TabularModel` takes.

    An object rather than a closure, so that it pickles with an exported model. Made by :meth:`fit`: the
    categorical columns ``cat_names`` with their training ``levels``; the continuous columns ``cont_names``
    with their training ``medians`` (filling missing values), ``means`` and ``stds`` (normalizing); ``na_names``,
    the continuous columns that get a ``<col>_na`` flag. ``proc(df, source)`` encodes ``df``; ``source`` names
    it in error messages.
    """
    cat_names: tuple[str, ...]
    levels: tuple[tuple, ...]       # per categorical column: its training levels, code i = levels[i]
    cont_names: tuple[str, ...]     # the continuous columns as given
    medians: tuple[float, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    na_names: tuple[str, ...]       # continuous columns with missing training values: each gets a flag

    @classmethod
    def fit(cls, train: Any, cat_names: Sequence[str], cont_names: Sequence[str],
            source: str = "the DataFrame") -> TabularProc:
        """Levels, medians, means and standard deviations of the training rows ``train`` (a DataFrame) for
        the columns ``cat_names`` and ``cont_names``; ``source`` names the table in error messages."""
        pd = require_pandas()
        levels = []
        for name in cat_names:
            found = pd.factorize(train[name], sort=True)[1]
            if len(found) == 0:
                raise DataFileError(f"{source}: categorical column {name!r} has no values in the training rows")
            levels.append(tuple(found.tolist()))
        medians, means, stds, na_names = [], [], [], []
        for name in cont_names:
            values = numeric_column(train, name, source, allow_missing=True)
            missing = np.isnan(values)
            if missing.all():
                raise DataFileError(f"{source}: continuous column {name!r} has no values in the training rows")
            median = float(np.median(values[~missing]))
            filled = np.where(missing, median, values)
            medians.append(median)
            means.append(float(filled.mean()))
            stds.append(float(filled.std()) or 1.0)
            if missing.any():
                na_names.append(name)
        return cls(tuple(cat_names), tuple(levels), tuple(cont_names), tuple(medians), tuple(means), tuple(stds),
                   tuple(na_names))

    @property
    def out_cont_names(self) -> tuple[str, ...]:
        """The columns of ``conts``: the continuous columns, then a ``<col>_na`` flag per ``na_names``."""
        return self.cont_names + tuple(f"{name}_na" for name in self.na_names)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        """Each categorical column's number of training levels (``TabularModel(cardinalities, ...)``)."""
        return tuple(map(len, self.levels))

    def __call__(self, df: Any, source: str = "the DataFrame") -> tuple[np.ndarray, np.ndarray]:
        pd = require_pandas()
        check_columns(df, [*self.cat_names, *self.cont_names], source)
        cats = [pd.Index(levels).get_indexer(df[name]) for name, levels in zip(self.cat_names, self.levels)]
        cats = np.stack(cats, axis=1) if cats else np.zeros((len(df), 0))
        conts, flags = [], {}
        for name, median, mean, std in zip(self.cont_names, self.medians, self.means, self.stds):
            values = numeric_column(df, name, source, allow_missing=True)
            missing = np.isnan(values)
            conts.append((np.where(missing, median, values) - mean) / std)
            flags[name] = missing
        conts += [flags[name] for name in self.na_names]
        conts = np.stack(conts, axis=1) if conts else np.zeros((len(df), 0))
        return cats.astype(np.int32), conts.astype(np.float32)


def _target(df: Any, y: str, task: str | None, source: str) -> tuple[np.ndarray, tuple | None]:
    """``(y, classes)``: float32 values for regression (``classes`` None), int32 codes into the sorted
    ``classes`` of the whole column for classification. ``task=None``: regression for a float column,
    classification otherwise (fastai's choice: integers are class labels unless told)."""
    pd = require_pandas()
    if task is None:
        task = "regression" if pd.api.types.is_float_dtype(df[y]) else "classification"
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: expected one of {', '.join(map(repr, TASKS))} or None")
    if task == "regression":
        return numeric_column(df, y, source).astype(np.float32), None
    codes, classes = pd.factorize(df[y], sort=True)
    if (codes < 0).any():
        row = row_label(df, int(np.argmax(codes < 0)))
        raise DataFileError(f"{source}: target column {y!r} at row {row!r} is missing")
    return codes.astype(np.int32), tuple(classes.tolist())


def _split(n: int, valid_pct: float, seed: int, valid_idx: Sequence[int] | None,
           source: str) -> tuple[np.ndarray, np.ndarray]:
    if valid_idx is None:
        train, valid = split_ratings(n, valid_pct, seed)
    else:
        valid = np.unique(np.asarray(valid_idx, dtype=np.int64))
        if len(valid) and (valid[0] < 0 or valid[-1] >= n):
            raise ValueError(f"valid_idx must be row positions in 0..{n - 1}, got {valid[0]}..{valid[-1]}")
        train = np.setdiff1d(np.arange(n), valid)
    if len(valid) == 0 or len(train) == 0:
        empty = "validation" if len(valid) == 0 else "training"
        how = f"valid_pct {valid_pct}" if valid_idx is None else f"{len(valid)} rows in valid_idx"
        raise DataFileError(f"{source}: the {empty} set would be empty ({n} rows, {how}); use more rows or "
                            f"another split")
    return train, valid


def tabular_from_df(df: Any, y: str = "target", cat_names: Sequence[str] = (), cont_names: Sequence[str] = (),
                    valid_pct: float = 0.2, seed: int = 42, batch_size: int = 64, task: str | None = None,
                    valid_idx: Sequence[int] | None = None, source: str = "the DataFrame") -> DataLoaders:
    """DataLoaders for :class:`~jaxlearn.collab.models.TabularModel` from a DataFrame: x the pair ``(cats int32
    (N, n_cat), conts float32 (N, n_cont))``, y float32 (regression) or int32 class codes (classification).

    ``dls.info``: ``cardinalities``, ``cat_names``, ``cont_names`` (with the ``_na`` flags), ``n_cont``,
    ``levels``, ``medians``, ``means``, ``stds`` (per column), ``process`` (the :class:`TabularProc`: new rows →
    ``(cats, conts)``, for ``learn.predict``), ``valid_idx``, and ``classes`` (classification) or ``y_range``
    (min, max; regression).

    Args:
        df: a pandas DataFrame, one example per row.
        y: the target column.
        cat_names: the categorical columns (coded by their training levels).
        cont_names: the continuous columns (filled, flagged, normalized; see the module).
        valid_pct: the share of rows for validation, drawn at random (the lesson's ``get_cv_idxs``).
        seed: seeds that draw.
        batch_size: training rows per batch (validation: twice as many).
        task: ``'regression'`` or ``'classification'``; None: regression for a float target, else
            classification.
        valid_idx: the validation rows' positions instead of a random draw (Rossmann validates on the last
            weeks).
        source: names the table in error messages.
    """
    cat_names, cont_names = list(cat_names), list(cont_names)
    named = [y, *cat_names, *cont_names]
    if len(set(named)) != len(named):
        twice = next(name for name in named if named.count(name) > 1)
        raise ValueError(f"column {twice!r} is named twice among y, cat_names and cont_names")
    if not cat_names and not cont_names:
        raise ValueError("no input columns: name the categorical ones (cat_names) and/or the continuous ones "
                         "(cont_names)")
    check_columns(df, named, source)
    targets, classes = _target(df, y, task, source)
    train, valid = _split(len(df), valid_pct, seed, valid_idx, source)
    proc = TabularProc.fit(df.iloc[train], cat_names, cont_names, source)
    cats, conts = proc(df, source)
    dls = DataLoaders.from_arrays(((cats[train], conts[train]), targets[train]),
                                  ((cats[valid], conts[valid]), targets[valid]), batch_size, transform=identity)
    dls.info.update(cardinalities=proc.cardinalities, cat_names=proc.cat_names, cont_names=proc.out_cont_names,
                    n_cont=len(proc.out_cont_names), levels=dict(zip(proc.cat_names, proc.levels)),
                    medians=dict(zip(proc.cont_names, proc.medians)), means=dict(zip(proc.cont_names, proc.means)),
                    stds=dict(zip(proc.cont_names, proc.stds)), process=proc, valid_idx=valid)
    if classes is None:
        dls.info["y_range"] = (float(targets.min()), float(targets.max()))
    else:
        dls.info["classes"] = classes
    return dls


def tabular_from_csv(path: str | os.PathLike, y: str = "target", cat_names: Sequence[str] = (),
                     cont_names: Sequence[str] = (), valid_pct: float = 0.2, seed: int = 42, batch_size: int = 64,
                     task: str | None = None, valid_idx: Sequence[int] | None = None,
                     **read_csv_kwargs: Any) -> DataLoaders:
    """:func:`tabular_from_df` of ``pandas.read_csv(path, **read_csv_kwargs)``; errors name the file. ``y``,
    ``cat_names``, ``cont_names``, ``valid_pct``, ``seed``, ``batch_size``, ``task`` and ``valid_idx`` as
    there."""
    return tabular_from_df(read_table(path, **read_csv_kwargs), y, cat_names, cont_names, valid_pct, seed,
                           batch_size, task, valid_idx, source=f"data file {path}")
