"""MovieLens loading (jaxlearn.collab.movielens): counts from shared/data/movielens/SOURCE.md, id remapping, the
lesson's 20% split, side information, and a DataFileError naming the file for every kind of bad file.

The real data comes from $JAXLEARN_MOVIELENS_DIR (.ci/run sets it); without it those tests are skipped.
"""

import csv
import os
import re
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from jaxlearn.collab import movielens
from jaxlearn.collab import MOVIELENS_ENV, load_ratings, split_ratings
from jaxlearn.data import CACHE_ENV, DataFileError


@pytest.fixture(scope="module")
def root() -> Path:
    folder = os.environ.get(MOVIELENS_ENV)
    if not folder:
        pytest.skip(f"{MOVIELENS_ENV} is not set: no local copy of MovieLens (see shared/data/movielens)")
    return Path(folder)


@pytest.fixture(scope="module")
def small(root):
    return load_ratings("ml-latest-small", root)


@pytest.fixture(scope="module")
def ml100k(root):
    return load_ratings("ml-100k", root)


def no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("jaxlearn.collab.movielens tried to download")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


# ------------------------------------------------------------------------------------------ the data

@pytest.mark.parametrize("name,n,n_users,n_items,rating_range", [
    ("ml-latest-small", 100_836, 610, 9_724, (0.5, 5.0)),
    ("ml-100k", 100_000, 943, 1_682, (1.0, 5.0)),
])
def test_counts_match_source(root, name, n, n_users, n_items, rating_range):
    r = load_ratings(name, root)
    assert (len(r), r.n_users, r.n_items, r.rating_range) == (n, n_users, n_items, rating_range)
    assert r.users.dtype == r.items.dtype == np.int32 and r.ratings.dtype == np.float32
    # contiguous: every index 0..n-1 is used
    np.testing.assert_array_equal(np.unique(r.users), np.arange(n_users))
    np.testing.assert_array_equal(np.unique(r.items), np.arange(n_items))
    assert len(r.titles) == n_items


def test_remapping_round_trips_to_the_files_ids(root, small, ml100k):
    with open(root / "ml-latest-small/ratings.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    np.testing.assert_array_equal(small.user_ids[small.users], [int(row[0]) for row in rows])
    np.testing.assert_array_equal(small.item_ids[small.items], [int(row[1]) for row in rows])
    np.testing.assert_array_equal(small.ratings, [float(row[2]) for row in rows])
    np.testing.assert_array_equal(small.timestamps, [int(row[3]) for row in rows])
    table = np.loadtxt(root / "ml-100k/u.data", dtype=np.int64)
    np.testing.assert_array_equal(ml100k.user_ids[ml100k.users], table[:, 0])
    np.testing.assert_array_equal(ml100k.item_ids[ml100k.items], table[:, 1])
    np.testing.assert_array_equal(ml100k.user_ids, np.arange(1, 944))  # ids 1..943 → index id-1


def title_of(r, item_id: int) -> str:
    return r.titles[int(np.searchsorted(r.item_ids, item_id))]


def test_titles_decode(small, ml100k):
    assert title_of(ml100k, 1) == "Toy Story (1995)"
    assert title_of(ml100k, 543) == "Misérables, Les (1995)"  # u.item is latin-1
    assert title_of(ml100k, 1633) == "Á köldum klaka (Cold Fever) (1994)"
    assert title_of(small, 73) == "Misérables, Les (1995)"  # movies.csv is UTF-8
    assert title_of(small, 29) == "City of Lost Children, The (Cité des enfants perdus, La) (1995)"  # quoted


def test_ml100k_side_information(ml100k, small):
    side = ml100k.side
    assert small.side is None
    assert (side.age.min(), side.age.max()) == (7, 73)
    assert ((side.gender == "M").sum(), (side.gender == "F").sum()) == (670, 273)
    assert len(side.occupations) == 21 and side.occupations[0] == "administrator"
    assert side.occupations[side.occupation[0]] == "technician"  # user 1: 24, M, technician
    assert (side.age[0], side.gender[0]) == (24, "M")
    assert side.genre_names[0] == "unknown" and side.genre_names[-1] == "Western" and len(side.genre_names) == 19
    toy_story = [side.genre_names[g] for g in np.flatnonzero(side.genres[0])]
    assert toy_story == ["Animation", "Children's", "Comedy"]
    assert side.year[0] == 1995
    assert np.flatnonzero(side.year == movielens.UNKNOWN_YEAR).tolist() == [266]  # item 267 'unknown'
    assert (side.year[side.year > 0].min(), side.year.max()) == (1922, 1998)


# -------------------------------------------------------------------------------------------- splits

def test_split_is_a_seeded_disjoint_fifth():
    n = 100_836
    train, valid = split_ratings(n)
    assert len(valid) == int(0.2 * n) == 20_167 and len(train) == n - 20_167
    np.testing.assert_array_equal(np.sort(np.concatenate([train, valid])), np.arange(n))  # disjoint, complete
    np.random.seed(42)  # the lesson's get_cv_idxs
    np.testing.assert_array_equal(valid, np.random.permutation(n)[:20_167])
    again_train, again_valid = split_ratings(n)
    np.testing.assert_array_equal(valid, again_valid)
    np.testing.assert_array_equal(train, again_train)
    assert not np.array_equal(split_ratings(n, seed=0)[1], valid)
    assert len(split_ratings(1000, valid_pct=0.1)[1]) == 100
    with pytest.raises(ValueError, match="valid_pct"):
        split_ratings(n, valid_pct=1.0)


def test_collab_loaders(root, small):
    dls = movielens.collab_loaders("ml-latest-small", batch_size=64, root=root)
    assert (len(dls.train), len(dls.valid)) == (100_836 - 20_167, 20_167)
    assert dls.train.x.shape[1:] == (2,) and dls.train.x.dtype == np.int32 and dls.train.y.dtype == np.float32
    assert dls.train.batch_size == 64
    info = dls.info
    assert (info["n_users"], info["n_items"], info["rating_range"]) == (610, 9_724, (0.5, 5.0))
    valid = info["valid_idx"]
    np.testing.assert_array_equal(np.asarray(dls.valid.x), np.stack([small.users, small.items], 1)[valid])
    np.testing.assert_array_equal(np.asarray(dls.valid.y), small.ratings[valid])
    np.testing.assert_array_equal(np.asarray(dls.train.transform(dls.train.x[:3])), np.asarray(dls.train.x[:3]))


def test_tabular_arrays(root, ml100k):
    t = movielens.tabular_arrays(root)
    assert t.cat_names == ("user", "movie", "age_group", "gender", "occupation", "release_year")
    assert t.cardinalities == (943, 1682, 7, 2, 21, 71)
    assert t.cats.shape == (100_000, 6) and t.cats.dtype == np.int32
    assert t.conts.shape == (100_000, 19) and t.conts.dtype == np.float32 and set(np.unique(t.conts)) == {0, 1}
    assert t.cont_names == ml100k.side.genre_names
    np.testing.assert_array_equal(t.cats[:, 0], ml100k.users)
    np.testing.assert_array_equal(t.cats[:, 1], ml100k.items)
    np.testing.assert_array_equal(t.y, ml100k.ratings)
    # codes in 0..card-1, except the movie without a release date: -1 (the model's unknown row)
    assert (t.cats.min(0) >= [0, 0, 0, 0, 0, -1]).all() and (t.cats.max(0) < t.cardinalities).all()
    np.testing.assert_array_equal(t.cats[:, 5] == -1, ml100k.items == 266)
    first = np.flatnonzero(ml100k.users == 0)[0]  # user 1: 24 years old → the 18-24 group, M, technician
    assert t.cats[first, 2:5].tolist() == [1, 1, ml100k.side.occupations.index("technician")]

    dls = movielens.tabular_loaders(batch_size=128, root=root)
    cats, conts = dls.train.x  # the pair TabularModel takes
    assert cats.shape[1:] == (6,) and cats.dtype == np.int32 and conts.shape[1:] == (19,) and conts.dtype == np.float32
    assert dls.info["cardinalities"] == t.cardinalities and dls.info["n_cont"] == 19
    valid = movielens.split_ratings(100_000)[1]
    np.testing.assert_array_equal(np.asarray(dls.valid.x[0]), t.cats[valid])
    np.testing.assert_array_equal(np.asarray(dls.valid.x[1]), t.conts[valid])


# --------------------------------------------------------------------------------------- where from

def test_env_var_is_used_and_never_downloads(root, monkeypatch, tmp_path):
    no_downloads(monkeypatch)
    monkeypatch.setenv(MOVIELENS_ENV, str(root))
    assert len(load_ratings("ml-100k")) == 100_000
    monkeypatch.setenv(MOVIELENS_ENV, str(tmp_path))  # set but empty: an error, not a download
    with pytest.raises(DataFileError, match=rf"missing data file .*u\.data.*{MOVIELENS_ENV}"):
        load_ratings("ml-100k")


def test_download_fills_the_cache_once(root, monkeypatch, tmp_path):
    """GroupLens' zip layout (ml-100k/...) served from a file:// URL."""
    with zipfile.ZipFile(tmp_path / "ml-100k.zip", "w") as archive:
        for path in (root / "ml-100k").iterdir():
            archive.write(path, f"ml-100k/{path.name}")
    monkeypatch.delenv(MOVIELENS_ENV, raising=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(movielens, "MOVIELENS_URL", tmp_path.as_uri() + "/{name}.zip")
    assert len(load_ratings("ml-100k")) == 100_000
    assert sorted(p.name for p in (tmp_path / "cache/movielens").iterdir()) == ["ml-100k"]  # no zip left
    no_downloads(monkeypatch)
    assert load_ratings("ml-100k").n_items == 1_682


def test_offline_download_fails_fast_naming_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(MOVIELENS_ENV, raising=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(movielens, "MOVIELENS_URL", tmp_path.as_uri() + "/nowhere/{name}.zip")
    with pytest.raises(DataFileError, match=rf"could not download .*ml-latest-small\.zip.*{MOVIELENS_ENV}"):
        load_ratings("ml-latest-small")
    assert list((tmp_path / "movielens").iterdir()) == []  # no half-written zip


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown MovieLens dataset 'ml-1m'"):
        load_ratings("ml-1m")


# ------------------------------------------------------------------------------------------ bad files

def drop_half(raw: bytes) -> bytes:
    return raw[: len(raw) // 2]


def rename_header(raw: bytes) -> bytes:
    return raw.replace(b"userId,movieId", b"user,movie", 1)


def to_utf8(raw: bytes) -> bytes:
    return raw.decode("latin-1").encode("utf-8")


def to_latin1(raw: bytes) -> bytes:
    return raw.decode("utf-8").encode("latin-1", errors="replace")


def crlf_to_lf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n")


def drop_zip_code(raw: bytes) -> bytes:
    lines = raw.split(b"\n")
    lines[4] = lines[4].rsplit(b"|", 1)[0]
    return b"\n".join(lines)


def change_a_rating(raw: bytes) -> bytes:
    return raw.replace(b"\t3\t", b"\t4\t", 1)


@pytest.mark.parametrize("name,file,damage,problem", [
    ("ml-latest-small", "ratings.csv", drop_half, r"50,\d\d\d rows \(truncated\?\); expected .*100,836 rows"),
    ("ml-latest-small", "ratings.csv", rename_header,
     r"header 'user,movie,rating,timestamp'; expected .*header 'userId,movieId,rating,timestamp'"),
    ("ml-latest-small", "ratings.csv", crlf_to_lf, r"LF line endings \(converted\?\); expected .*CRLF"),
    ("ml-latest-small", "movies.csv", to_latin1, r"not utf-8 text \(byte b'\\xe9' at offset \d+\)"),
    ("ml-100k", "u.item", to_utf8, r"it is UTF-8 text \(re-encoded\?\), the official file is latin-1"),
    ("ml-100k", "u.data", drop_half, r"50,\d\d\d rows \(truncated\?\); expected .*100,000 rows"),
    ("ml-100k", "u.user", drop_zip_code, r"line 5 has 4 fields; expected .*5 '\|'-separated fields"),
    ("ml-100k", "u.data", change_a_rating, r"its content differs from the official file \(sha256 mismatch\)"),
])
def test_bad_file_is_named_with_what_is_wrong(root, tmp_path, monkeypatch, name, file, damage, problem):
    folder = tmp_path / name
    folder.mkdir()
    for path in (root / name).iterdir():  # good files linked, the damaged one written
        (folder / path.name).symlink_to(path)
    (folder / file).unlink()
    (folder / file).write_bytes(damage((root / name / file).read_bytes()))
    no_downloads(monkeypatch)
    with pytest.raises(DataFileError, match=rf"corrupt data file {re.escape(str(folder / file))}: {problem}"):
        load_ratings(name, tmp_path)


@pytest.mark.parametrize("name,file", [("ml-latest-small", "movies.csv"), ("ml-100k", "u.genre")])
def test_missing_file_is_named(root, tmp_path, name, file):
    folder = tmp_path / name
    folder.mkdir()
    for path in (root / name).iterdir():
        if path.name != file:
            (folder / path.name).symlink_to(path)
    expected = rf"missing data file {re.escape(str(folder / file))}: expected GroupLens' {re.escape(file)}"
    with pytest.raises(DataFileError, match=expected):
        load_ratings(name, tmp_path)
