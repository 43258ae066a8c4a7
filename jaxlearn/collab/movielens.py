"""MovieLens ratings for collaborative filtering (fast.ai 2018 lessons 5-6) and entity embeddings (lesson 4).

Two GroupLens datasets (F. M. Harper and J. A. Konstan, "The MovieLens Datasets: History and Context",
ACM TiiS 5(4):19, 2015; research use only, see each dataset's README):

* ``ml-latest-small`` (September 2018 release): 100,836 ratings, 610 users, 9,724 movies -- lesson 5's data.
* ``ml-100k``: 100,000 ratings, 943 users, 1,682 movies, with each user's age, gender and occupation and each
  movie's 19 genre flags and release date (the side information of :func:`tabular_arrays`).

Where the files come from: ``$JAXLEARN_MOVIELENS_DIR``, a folder holding ``ml-latest-small/`` and
``ml-100k/`` as unzipped from GroupLens; without it the official zip is downloaded once into
``cache_dir()/movielens``. Every file is checked against the sha256 of the official file before it is parsed,
so the parsers can trust what they read; a file that fails the check is named with what is wrong with it
(missing, wrong encoding, wrong header, too few rows, wrong number of fields) when that can be told.

As in the lesson, user and movie ids are remapped to contiguous indices, and the validation set is a
seeded random 20% of the *ratings* (not of users or movies).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from jaxlearn.data import DataFileError, DataLoaders, cache_dir, identity
from jaxlearn.data.files import download

MOVIELENS_ENV = "JAXLEARN_MOVIELENS_DIR"
"""The environment variable naming the folder that holds the datasets' folders (:func:`movielens_dir`)."""
MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"
DATASETS = ("ml-latest-small", "ml-100k")
UNKNOWN_YEAR = -1
"""``SideInfo.year`` of a movie without a release date (ml-100k's item 267, 'unknown')."""
AGE_GROUPS = (18, 25, 35, 45, 50, 56)
"""Lower edges of the age groups after the first (MovieLens 1M's: under 18, 18-24, 25-34, 35-44, 45-49,
50-55, 56+), used to bucket ml-100k's ages for :func:`tabular_arrays`."""


@dataclass(frozen=True)
class _OfficialFile:
    """One file as GroupLens ships it (numbers from shared/data/movielens/SOURCE.md)."""
    name: str
    sha256: str
    encoding: str  # 'utf-8', 'ascii' or 'latin-1'
    rows: int      # data rows: non-blank lines, the header excluded
    fields: int
    sep: str       # ',' means CSV with quoted fields
    header: str | None = None
    newline: str = "\n"

    def describe(self) -> str:
        header = f"header {self.header!r} + " if self.header else ""
        sep = {",": "comma", "\t": "tab", "|": "'|'"}[self.sep]
        ending = "CRLF" if self.newline == "\r\n" else "LF"
        return (f"GroupLens' {self.name}: {header}{self.rows:,} rows of {self.fields} {sep}-separated fields, "
                f"{self.encoding}, {ending} line endings")


_FILES = {
    "ml-latest-small": {
        "ratings": _OfficialFile("ratings.csv", "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
                                 "utf-8", 100_836, 4, ",", "userId,movieId,rating,timestamp", "\r\n"),
        "movies": _OfficialFile("movies.csv", "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
                                "utf-8", 9_742, 3, ",", "movieId,title,genres", "\r\n"),
    },
    "ml-100k": {
        "ratings": _OfficialFile("u.data", "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
                                 "ascii", 100_000, 4, "\t"),
        "movies": _OfficialFile("u.item", "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
                                "latin-1", 1_682, 24, "|"),
        "users": _OfficialFile("u.user", "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
                               "ascii", 943, 5, "|"),
        "genres": _OfficialFile("u.genre", "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb",
                                "ascii", 19, 2, "|"),
        "occupations": _OfficialFile("u.occupation",
                                     "cd5fbec9afe345d993a62fc7817df1a4a9079c4feb267b3118763b8fd942137d",
                                     "ascii", 21, 1, "|"),
    },
}


# ------------------------------------------------------------------------------------ finding the files

def movielens_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder holding dataset ``name``'s files: ``root/name``, ``$JAXLEARN_MOVIELENS_DIR/name``, or the
    download cache ``cache_dir()/movielens/name`` (filled from GroupLens' zip on first use).

    Nothing is downloaded when ``root`` or the variable is given: a missing file is then an error.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown MovieLens dataset {name!r}: known are {', '.join(map(repr, DATASETS))}")
    root = root or os.environ.get(MOVIELENS_ENV)
    if root:
        return Path(root) / name
    folder = cache_dir() / "movielens"
    if not all((folder / name / f.name).is_file() for f in _FILES[name].values()):
        _download(name, folder)
    return folder / name


def _download(name: str, folder: Path) -> None:
    """Fetch and unzip GroupLens' ``name.zip`` into ``folder``.

    The zip itself is not checksummed (GroupLens publishes no sha256); every file taken from it is, on read.
    """
    url = MOVIELENS_URL.format(name=name)
    offline_hint = f"set {MOVIELENS_ENV} to a folder holding {name}/ unzipped from GroupLens' {name}.zip"
    archive_path = download(url, folder / f"{name}.zip", offline_hint)
    try:
        with zipfile.ZipFile(archive_path) as archive:
            archive.extractall(folder)
    except (OSError, zipfile.BadZipFile) as e:
        raise DataFileError(f"cannot unzip MovieLens {name} downloaded from {url} ({type(e).__name__}: {e}); "
                            f"offline, {offline_hint}") from e
    finally:
        archive_path.unlink(missing_ok=True)


def _read_official(folder: Path, spec: _OfficialFile) -> str:
    """The text of one official file, after checking its sha256; otherwise a DataFileError saying what is
    wrong with it."""
    path = folder / spec.name
    if not path.is_file():
        raise DataFileError(f"missing data file {path}: expected {spec.describe()}; set {MOVIELENS_ENV} to a "
                            f"folder holding ml-latest-small/ and ml-100k/ unzipped from GroupLens")
    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != spec.sha256:
        raise DataFileError(f"corrupt data file {path}: {_what_is_wrong(raw, spec)}; expected {spec.describe()} "
                            f"(sha256 {spec.sha256})")
    return raw.decode(spec.encoding)


def _what_is_wrong(raw: bytes, spec: _OfficialFile) -> str:
    """The most specific difference from the official file that can be read off the bytes."""
    try:
        text = raw.decode(spec.encoding)
    except UnicodeDecodeError as e:
        return f"not {spec.encoding} text (byte {raw[e.start:e.start + 1]!r} at offset {e.start})"
    if spec.encoding == "latin-1" and not raw.isascii() and _is_utf8(raw):
        return "it is UTF-8 text (re-encoded?), the official file is latin-1 (ISO-8859-1)"
    crlf = b"\r\n" in raw
    if crlf != (spec.newline == "\r\n"):
        return f"{'CRLF' if crlf else 'LF'} line endings (converted?)"
    lines = [line for line in text.splitlines() if line]
    if spec.header is not None:
        if not lines:
            return "an empty file"
        if lines[0] != spec.header:
            return f"header {lines[0]!r}"
        lines = lines[1:]
    if len(lines) != spec.rows:
        return f"{len(lines):,} rows" + (" (truncated?)" if len(lines) < spec.rows else "")
    rows = csv.reader(lines) if spec.sep == "," else (line.split(spec.sep) for line in lines)
    for number, row in enumerate(rows, start=1 + (spec.header is not None)):
        if len(row) != spec.fields:
            return f"line {number} has {len(row)} fields"
    return "its content differs from the official file (sha256 mismatch)"


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# ------------------------------------------------------------------------------------------- ratings

@dataclass(frozen=True)
class SideInfo:
    """ml-100k's users and movies, indexed like :class:`Ratings`' contiguous user / item indices: per user its
    ``age`` (years), ``gender`` ('M' / 'F') and ``occupation`` (an index into ``occupations``); per movie its
    ``genres`` (bool flags, columns named by ``genre_names``) and release ``year`` (:data:`UNKNOWN_YEAR`
    without a release date)."""
    age: np.ndarray          # int32 (n_users,) years
    gender: np.ndarray       # str (n_users,) 'M' or 'F'
    occupation: np.ndarray   # int32 (n_users,) index into ``occupations``
    occupations: tuple[str, ...]
    genres: np.ndarray       # bool (n_items, 19), columns as ``genre_names``
    genre_names: tuple[str, ...]
    year: np.ndarray         # int32 (n_items,) release year, UNKNOWN_YEAR without a release date


@dataclass(frozen=True)
class Ratings:
    """One rating per row; users and items are remapped to contiguous indices (original ids sorted).

    ``user_ids[users[k]]`` and ``item_ids[items[k]]`` are rating k's original ids; ``titles[i]`` is item i's.
    ``ratings`` are the stars (float32), ``timestamps`` seconds since 1970 (UTC). ``side`` holds ml-100k's side
    information (None for ml-latest-small).
    """
    users: np.ndarray       # int32 (N,) in 0..n_users-1
    items: np.ndarray       # int32 (N,) in 0..n_items-1
    ratings: np.ndarray     # float32 (N,)
    timestamps: np.ndarray  # int64 (N,) seconds since 1970 (UTC)
    user_ids: np.ndarray    # int64 (n_users,)
    item_ids: np.ndarray    # int64 (n_items,)
    titles: tuple[str, ...]
    side: SideInfo | None = None

    def __len__(self) -> int:
        return len(self.ratings)

    @property
    def n_users(self) -> int:
        """The number of distinct users."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """The number of distinct items (movies)."""
        return len(self.item_ids)

    @property
    def rating_range(self) -> tuple[float, float]:
        """``(lowest, highest)`` rating."""
        return float(self.ratings.min()), float(self.ratings.max())


def load_ratings(name: str, root: str | os.PathLike | None = None) -> Ratings:
    """MovieLens ``name``, ``'ml-latest-small'`` or ``'ml-100k'``, as :class:`Ratings` (see
    :func:`movielens_dir` for where the files come from, ``root`` included)."""
    folder = movielens_dir(name, root)
    files = _FILES[name]
    if name == "ml-latest-small":
        table = np.loadtxt(io.StringIO(_read_official(folder, files["ratings"])), delimiter=",", skiprows=1)
        rows = csv.reader(io.StringIO(_read_official(folder, files["movies"]), newline=""))
        next(rows)  # the header
        title_of = {int(movie_id): title for movie_id, title, _ in rows}
        return _remapped(table, title_of)
    table = np.loadtxt(io.StringIO(_read_official(folder, files["ratings"])), delimiter="\t")
    items = [line.split("|") for line in _read_official(folder, files["movies"]).splitlines()]
    ratings = _remapped(table, {int(item[0]): item[1] for item in items})
    return replace(ratings, side=_ml100k_side(folder, items, ratings))


def _remapped(table: np.ndarray, title_of: dict[int, str]) -> Ratings:
    """Ratings from a (N, 4) table of user id, item id, rating, timestamp (exact in float64)."""
    user_ids, users = np.unique(table[:, 0].astype(np.int64), return_inverse=True)
    item_ids, items = np.unique(table[:, 1].astype(np.int64), return_inverse=True)
    return Ratings(users=users.astype(np.int32), items=items.astype(np.int32),
                   ratings=table[:, 2].astype(np.float32), timestamps=table[:, 3].astype(np.int64),
                   user_ids=user_ids, item_ids=item_ids, titles=tuple(title_of[int(i)] for i in item_ids))


def _ml100k_side(folder: Path, items: list[list[str]], ratings: Ratings) -> SideInfo:
    files = _FILES["ml-100k"]
    occupations = tuple(_read_official(folder, files["occupations"]).split())
    genre_names = tuple(line.split("|")[0] for line in _read_official(folder, files["genres"]).splitlines()
                        if line)
    # u.user and u.item list ids 1..n in order (checked by the sha256), so row id-1 belongs to id.
    users = [line.split("|") for line in _read_official(folder, files["users"]).splitlines()]
    user_rows, item_rows = ratings.user_ids - 1, ratings.item_ids - 1
    release_dates = [item[2] for item in items]  # '01-Jan-1995', or '' when unknown
    return SideInfo(
        age=np.array([int(u[1]) for u in users], np.int32)[user_rows],
        gender=np.array([u[2] for u in users])[user_rows],
        occupation=np.array([occupations.index(u[3]) for u in users], np.int32)[user_rows],
        occupations=occupations,
        genres=np.array([item[5:] for item in items], np.int8).astype(bool)[item_rows],
        genre_names=genre_names,
        year=np.array([int(d[-4:]) if d else UNKNOWN_YEAR for d in release_dates], np.int32)[item_rows])


# ----------------------------------------------------------------------------------- splits and loaders

def split_ratings(n: int, valid_pct: float = 0.2, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, valid_idx)``: a seeded random ``valid_pct`` of ``n`` ratings for validation.

    The lesson's ``get_cv_idxs``: ``np.random.seed(seed); permutation(n)[:int(valid_pct * n)]``, so the
    validation rows are the notebook's; the training rows are the rest, in file order.
    """
    if not 0.0 < valid_pct < 1.0:
        raise ValueError(f"valid_pct must be in (0, 1), got {valid_pct}")
    order = np.random.RandomState(seed).permutation(n)
    n_valid = int(valid_pct * n)
    return np.sort(order[n_valid:]), order[:n_valid]


def collab_loaders(name: str, batch_size: int = 64, valid_pct: float = 0.2, seed: int = 42,
                   root: str | os.PathLike | None = None) -> DataLoaders:
    """Lesson 5's data: x int32 (N, 2) ``[user, item]`` indices, y float32 ratings, split by
    :func:`split_ratings`.

    ``dls.info``: ``n_users``, ``n_items``, ``rating_range`` (min, max), ``titles``, ``user_ids``,
    ``item_ids`` (index → original id) and ``valid_idx`` (the validation rows of :func:`load_ratings`).

    Args:
        name: ``'ml-latest-small'`` (the lesson's) or ``'ml-100k'`` (with side information).
        batch_size: training ratings per batch (validation: twice as many).
        valid_pct: the share of ratings for validation.
        seed: seeds the split (42: the notebook's validation rows).
        root: the folder holding the dataset's folder (default ``$JAXLEARN_MOVIELENS_DIR``, else downloaded
            once; :func:`movielens_dir`).
    """
    r = load_ratings(name, root)
    x = np.stack([r.users, r.items], axis=1)
    train, valid = split_ratings(len(r), valid_pct, seed)
    dls = DataLoaders.from_arrays((x[train], r.ratings[train]), (x[valid], r.ratings[valid]), batch_size,
                                  transform=identity)
    dls.info.update(n_users=r.n_users, n_items=r.n_items, rating_range=r.rating_range, titles=r.titles,
                    user_ids=r.user_ids, item_ids=r.item_ids, valid_idx=valid)
    return dls


# ------------------------------------------------------------------------------------ tabular (ml-100k)

@dataclass(frozen=True)
class TabularArrays:
    """ml-100k's ratings as a table, for :class:`jaxlearn.collab.models.TabularModel` (lesson 4's entity
    embeddings applied to lesson 5's data).

    Categorical columns (``cats``, int32 codes 0..cardinality-1; -1 = unknown, which the model maps to an
    extra embedding row): ``user``, ``movie`` (contiguous indices), ``age_group`` (:data:`AGE_GROUPS`),
    ``gender`` (0 F, 1 M), ``occupation`` (u.occupation's order), ``release_year`` (the distinct known years,
    in order; -1 for the movie without a release date).
    Continuous columns (``conts``, float32): the 19 genre flags as 0/1, named as in u.genre. A 2-valued
    category's embedding would only learn one number per value, which a flag times a weight plus a bias
    already is, so flags stay continuous. ``y``: the ratings; ``cat_names``, ``cardinalities`` and
    ``cont_names`` describe the columns.
    """
    cats: np.ndarray   # int32 (N, n_cat)
    conts: np.ndarray  # float32 (N, n_cont)
    y: np.ndarray      # float32 (N,) ratings
    cat_names: tuple[str, ...]
    cardinalities: tuple[int, ...]
    cont_names: tuple[str, ...]


def tabular_arrays(root: str | os.PathLike | None = None) -> TabularArrays:
    """One row per ml-100k rating, with the user's and the movie's side information (see
    :class:`TabularArrays`); ``root`` as :func:`movielens_dir`'s."""
    r = load_ratings("ml-100k", root)
    side = r.side
    years = np.unique(side.year[side.year != UNKNOWN_YEAR])
    year_code = np.where(side.year == UNKNOWN_YEAR, -1, np.searchsorted(years, side.year))
    columns = {  # name: (code per user or item, cardinality, indexed by)
        "user": (np.arange(r.n_users), r.n_users, r.users),
        "movie": (np.arange(r.n_items), r.n_items, r.items),
        "age_group": (np.digitize(side.age, AGE_GROUPS), len(AGE_GROUPS) + 1, r.users),
        "gender": ((side.gender == "M").astype(int), 2, r.users),
        "occupation": (side.occupation, len(side.occupations), r.users),
        "release_year": (year_code, len(years), r.items),
    }
    cats = np.stack([codes[index] for codes, _, index in columns.values()], axis=1).astype(np.int32)
    return TabularArrays(cats=cats, conts=side.genres[r.items].astype(np.float32), y=r.ratings,
                         cat_names=tuple(columns), cardinalities=tuple(card for _, card, _ in columns.values()),
                         cont_names=side.genre_names)


def tabular_loaders(batch_size: int = 64, valid_pct: float = 0.2, seed: int = 42,
                    root: str | os.PathLike | None = None) -> DataLoaders:
    """:func:`tabular_arrays` as DataLoaders, split like :func:`collab_loaders` (same validation ratings).

    x is the pair ``(cats, conts)`` (int32 (N, n_cat), float32 (N, n_cont)) that
    :class:`~jaxlearn.collab.models.TabularModel` takes; ``dls.info`` holds ``cardinalities``, ``cat_names``,
    ``cont_names``, ``n_cont`` and ``rating_range``. ``batch_size``, ``valid_pct``, ``seed`` and ``root`` as
    :func:`collab_loaders`'s.
    """
    t = tabular_arrays(root)
    train, valid = split_ratings(len(t.y), valid_pct, seed)
    dls = DataLoaders.from_arrays(((t.cats[train], t.conts[train]), t.y[train]),
                                  ((t.cats[valid], t.conts[valid]), t.y[valid]), batch_size, transform=identity)
    dls.info.update(cardinalities=t.cardinalities, cat_names=t.cat_names, cont_names=t.cont_names,
                    n_cont=len(t.cont_names), rating_range=(float(t.y.min()), float(t.y.max())))
    return dls
