"""Loaders for a user's own data: ratings (jaxlearn.collab.ratings), tables (jaxlearn.collab.tabular), any text
(jaxlearn.text.text_loaders) and any tfds image-classification dataset (jaxlearn.data.tfds_images, through
load_dataset). Hand-computed encodings, the splits' promises, clear errors naming the bad thing, and short
Learner runs whose loss falls. The tfds tests run offline on tfds.testing.mock_data."""

import os
import socket
import sys
import urllib.request
from pathlib import Path

import numpy as np
import optax
import pytest

from jaxlearn import Learner
from jaxlearn.collab import (MOVIELENS_ENV, EmbeddingDotBias, TabularModel, collab_from_csv, collab_from_df,
                             collab_loaders, split_ratings, tabular_from_csv, tabular_from_df)
from jaxlearn.data import DataFileError, load_dataset
from jaxlearn.data.tfds_images import pick_splits
from jaxlearn.losses import mse
from jaxlearn.text import text_loaders
from jaxlearn.text.data import PAD, UNK

pd = pytest.importorskip("pandas")


def adam_learner(model, dls, lr: float = 1e-2) -> Learner:
    """MSE and Adam, a whole epoch per compiled call (fewer host round trips on the CPU)."""
    return Learner(model, dls, loss_fn=mse, optimizer=optax.adam, lr=lr, steps_per_call=dls.train.n_batches)


# -------------------------------------------------------------------------------------------- ratings

RATINGS = pd.DataFrame({"who": ["bob", "ann", "bob", "cy", "ann", "bob", "ann", "cy", "bob", "ann"],
                        "movie": [30, 10, 20, 10, 30, 10, 20, 30, 40, 40],
                        "stars": [4.0, 3.5, 5.0, 1.0, 2.0, 3.0, 4.5, 2.5, 1.5, 5.0]})


def test_ratings_ids_are_remapped_in_sorted_order_with_the_lessons_split():
    dls = collab_from_df(RATINGS, user="who", item="movie", rating="stars", batch_size=2)
    info = dls.info
    assert (info["n_users"], info["n_items"], info["rating_range"]) == (3, 4, (1.0, 5.0))
    assert info["user_ids"].tolist() == ["ann", "bob", "cy"] and info["item_ids"].tolist() == [10, 20, 30, 40]
    assert info["user_index"] == {"ann": 0, "bob": 1, "cy": 2} and info["item_index"][40] == 3
    train, valid = split_ratings(10, 0.2, 42)  # the lesson's get_cv_idxs, as collab_loaders
    np.testing.assert_array_equal(info["valid_idx"], valid)
    codes = np.stack([RATINGS.who.map(info["user_index"]), RATINGS.movie.map(info["item_index"])], 1)
    for ds, rows in ((dls.train, train), (dls.valid, valid)):
        assert ds.x.dtype == np.int32 and ds.y.dtype == np.float32 and ds.x.shape == (len(rows), 2)
        np.testing.assert_array_equal(ds.x, codes[rows])
        np.testing.assert_array_equal(ds.y, RATINGS.stars.to_numpy()[rows])
    assert dls.info["user_ids"][np.asarray(dls.train.x[0, 0])] == RATINGS.who[train[0]]  # index → original id


def test_movielens_csv_gives_collab_loaders_arrays():
    """GroupLens' own ratings.csv through collab_from_csv: the arrays of the lesson's collab_loaders."""
    root = os.environ.get(MOVIELENS_ENV)
    if not root:
        pytest.skip(f"{MOVIELENS_ENV} is not set: no local copy of MovieLens")
    dls = collab_from_csv(Path(root) / "ml-latest-small" / "ratings.csv", user="userId", item="movieId")
    lesson = collab_loaders("ml-latest-small", root=root)
    for ours, theirs in ((dls.train, lesson.train), (dls.valid, lesson.valid)):
        np.testing.assert_array_equal(ours.x, theirs.x)
        np.testing.assert_array_equal(ours.y, theirs.y)
    for key in ("n_users", "n_items", "rating_range", "user_ids", "item_ids", "valid_idx"):
        np.testing.assert_array_equal(dls.info[key], lesson.info[key])


def test_per_user_split_keeps_every_validation_user_in_training():
    users = np.repeat(np.arange(5), [1, 2, 3, 5, 10])  # a 1-rating user stays in training
    df = pd.DataFrame({"user": users, "item": np.arange(len(users)) % 7, "rating": 3.0})
    dls = collab_from_df(df, split="per_user", valid_pct=0.2, batch_size=4)
    valid_users = users[dls.info["valid_idx"]]
    # min(round(0.2 n), n - 1) per user: 1 → 0, 2 → 0, 3 → 1, 5 → 1, 10 → 2
    assert np.bincount(valid_users, minlength=5).tolist() == [0, 0, 1, 1, 2]
    assert set(np.asarray(dls.valid.x[:, 0]).tolist()) <= set(np.asarray(dls.train.x[:, 0]).tolist())
    assert len(dls.train) + len(dls.valid) == len(df)


def test_ratings_from_csv_with_read_csv_options(tmp_path):
    path = tmp_path / "ratings.csv"
    RATINGS.rename(columns={"who": "userId"}).to_csv(path, sep=";", index=False)
    dls = collab_from_csv(path, user="userId", item="movie", rating="stars", batch_size=2, sep=";")
    reference = collab_from_df(RATINGS, user="who", item="movie", rating="stars", batch_size=2)
    np.testing.assert_array_equal(dls.train.x, reference.train.x)
    np.testing.assert_array_equal(dls.valid.y, reference.valid.y)


def test_ratings_errors_name_the_column_row_or_file(tmp_path):
    with pytest.raises(DataFileError, match=r"has no column 'rating': its columns are \['who', 'movie', 'stars'\]"):
        collab_from_df(RATINGS, user="who", item="movie")
    bad = RATINGS.assign(stars=RATINGS.stars.astype(object))
    bad.loc[6, "stars"] = "five"
    with pytest.raises(DataFileError, match=r"column 'stars' at row 6 is 'five', not a number"):
        collab_from_df(bad, user="who", item="movie", rating="stars")
    with pytest.raises(DataFileError, match=r"column 'stars' at row 3 is missing"):
        collab_from_df(RATINGS.assign(stars=RATINGS.stars.where(RATINGS.index != 3)), "who", "movie", "stars")
    with pytest.raises(DataFileError, match=r"column 'who' at row 2 is missing"):
        collab_from_df(RATINGS.assign(who=RATINGS.who.where(RATINGS.index != 2)), "who", "movie", "stars")
    with pytest.raises(DataFileError, match=r"the DataFrame has no rows"):
        collab_from_df(RATINGS.iloc[:0], "who", "movie", "stars")
    with pytest.raises(DataFileError, match=r"validation set would be empty \(split 'random', valid_pct 0.2: 4 "):
        collab_from_df(RATINGS.iloc[:4], "who", "movie", "stars", batch_size=2)
    with pytest.raises(DataFileError, match=r"validation set would be empty \(split 'per_user'.*no user has enough"):
        collab_from_df(RATINGS.iloc[:3], "who", "movie", "stars", split="per_user", batch_size=2)
    with pytest.raises(ValueError, match=r"unknown split 'by_user': expected one of 'random', 'per_user'"):
        collab_from_df(RATINGS, "who", "movie", "stars", split="by_user")
    with pytest.raises(DataFileError, match=r"missing data file .*nope\.csv"):
        collab_from_csv(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataFileError, match=r"corrupt data file .*empty\.csv: pandas.read_csv cannot read it"):
        collab_from_csv(tmp_path / "empty.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataFileError, match=r"data file .*other\.csv has no column 'user': its columns are"):
        collab_from_csv(tmp_path / "other.csv")


def test_embedding_dot_bias_trains_on_own_ratings():
    rng = np.random.default_rng(0)
    n_users, n_items, n = 40, 30, 1200
    u, m = rng.normal(size=(n_users, 3)), rng.normal(size=(n_items, 3))
    users, items = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    stars = 1 / (1 + np.exp(-(u[users] * m[items]).sum(1))) * 4 + 1
    df = pd.DataFrame({"user": [f"user{i}" for i in users], "item": [f"film{i}" for i in items], "rating": stars})
    dls = collab_from_df(df, batch_size=64)
    learn = adam_learner(EmbeddingDotBias(dls.info["n_users"], dls.info["n_items"], n_factors=5,
                                          y_range=dls.info["rating_range"]), dls, lr=0.05)
    before = learn.evaluate()["loss"]
    learn.fit(5)
    after = learn.evaluate()["loss"]
    assert after < 0.1 * before, (before, after)


# -------------------------------------------------------------------------------------------- tabular

def test_tabular_encoding_by_hand():
    """Training rows 0-3, validation rows 4-5 (valid_idx): every statistic comes from rows 0-3."""
    df = pd.DataFrame({"shop": ["b", "a", None, "b", "c", "a"],      # 'c' unseen in training, None missing
                       "temp": [1.0, np.nan, 3.0, 5.0, np.nan, 7.0],  # missing in training: a temp_na flag
                       "age": [10.0, 10.0, 20.0, 20.0, np.nan, 40.0],  # missing only in validation: no flag
                       "target": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    dls = tabular_from_df(df, cat_names=["shop"], cont_names=["temp", "age"], valid_idx=[4, 5], batch_size=2)
    info = dls.info
    assert info["levels"] == {"shop": ("a", "b")} and info["cardinalities"] == (2,)
    assert info["cont_names"] == ("temp", "age", "temp_na") and info["n_cont"] == 3
    # temp: median of 1, 3, 5 = 3; filled 1, 3, 3, 5: mean 3, population std √2. age: 10, 10, 20, 20
    assert info["medians"] == {"temp": 3.0, "age": 15.0} and info["means"] == {"temp": 3.0, "age": 15.0}
    assert info["stds"] == pytest.approx({"temp": np.sqrt(2), "age": 5.0})
    cats, conts = dls.train.x
    np.testing.assert_array_equal(cats[:, 0], [1, 0, -1, 1])  # a missing level is the unknown code -1
    np.testing.assert_allclose(conts, [[-2 / np.sqrt(2), -1, 0], [0, -1, 1], [0, 1, 0], [2 / np.sqrt(2), 1, 0]],
                               rtol=1e-6)
    valid_cats, valid_conts = dls.valid.x
    np.testing.assert_array_equal(valid_cats[:, 0], [-1, 0])  # 'c' was never seen in training
    np.testing.assert_allclose(valid_conts, [[0, 0, 1], [4 / np.sqrt(2), 5, 0]], rtol=1e-6)
    assert dls.train.y.dtype == np.float32 and info["y_range"] == (1.0, 6.0)
    np.testing.assert_array_equal(info["valid_idx"], [4, 5])
    new_cats, new_conts = info["process"](df.iloc[4:])  # new rows are encoded as the validation rows were
    np.testing.assert_array_equal(new_cats, valid_cats)
    np.testing.assert_allclose(new_conts, valid_conts)
    assert new_cats.dtype == np.int32 and new_conts.dtype == np.float32


def test_tabular_classification_target_and_csv(tmp_path):
    df = pd.DataFrame({"colour": ["red", "blue", "red", "green"] * 5, "size": np.arange(20.0),
                       "label": ["cat", "dog", "ant", "dog"] * 5})
    dls = tabular_from_df(df, y="label", cat_names=["colour"], valid_pct=0.25, batch_size=4)
    assert dls.info["classes"] == ("ant", "cat", "dog") and dls.train.y.dtype == np.int32
    codes = df.label.map({"ant": 0, "cat": 1, "dog": 2}).to_numpy()
    np.testing.assert_array_equal(dls.valid.y, codes[dls.info["valid_idx"]])
    assert dls.info["n_cont"] == 0 and dls.train.x[1].shape == (15, 0)
    as_numbers = tabular_from_df(df.assign(label=np.arange(20) % 3), y="label", cont_names=["size"],
                                 task="regression", batch_size=4)
    assert as_numbers.train.y.dtype == np.float32 and "classes" not in as_numbers.info
    path = tmp_path / "table.csv"
    df.to_csv(path, index=False)
    from_csv = tabular_from_csv(path, y="label", cat_names=["colour"], valid_pct=0.25, batch_size=4)
    np.testing.assert_array_equal(from_csv.train.x[0], dls.train.x[0])
    # the label is the colour's: a classifier with one logit per class learns it and predicts class names
    model = TabularModel(dls.info["cardinalities"], 0, layers=(8,), ps=(0.0,), emb_drop=0.0, n_out=3)
    learn = Learner(model, dls, optimizer=optax.adam, lr=1e-2, steps_per_call=dls.train.n_batches)
    learn.fit(30)
    pred = learn.predict(dls.info["process"](pd.DataFrame({"colour": ["blue", "green"], "size": [0.0, 1.0]})))
    assert list(pred.label) == ["dog", "dog"] and pred.probs.shape == (2, 3)


def test_tabular_errors_name_the_column_row_or_file(tmp_path, monkeypatch):
    df = pd.DataFrame({"shop": ["a", "b"] * 5, "temp": np.arange(10.0), "target": np.arange(10.0)})
    with pytest.raises(DataFileError, match=r"has no column 'tmp': its columns are \['shop', 'temp', 'target'\]"):
        tabular_from_df(df, cat_names=["shop"], cont_names=["tmp"])
    with pytest.raises(DataFileError, match=r"column 'temp' at row 4 is 'warm', not a number"):
        tabular_from_df(df.assign(temp=df.temp.astype(object).where(df.index != 4, "warm")), cont_names=["temp"])
    with pytest.raises(DataFileError, match=r"column 'target' at row 7 is missing"):
        tabular_from_df(df.assign(target=df.target.where(df.index != 7)), cont_names=["temp"])
    with pytest.raises(DataFileError, match=r"target column 'target' at row 1 is missing"):
        tabular_from_df(df.assign(target=["yes", None] * 5), cont_names=["temp"])
    with pytest.raises(ValueError, match=r"column 'temp' is named twice"):
        tabular_from_df(df, cat_names=["temp"], cont_names=["temp"])
    with pytest.raises(ValueError, match=r"no input columns"):
        tabular_from_df(df)
    with pytest.raises(DataFileError, match=r"validation set would be empty \(3 rows, valid_pct 0.2\)"):
        tabular_from_df(df.iloc[:3], cont_names=["temp"], batch_size=1)
    with pytest.raises(DataFileError, match=r"continuous column 'temp' has no values in the training rows"):
        tabular_from_df(df.assign(temp=np.nan), cont_names=["temp"], valid_idx=[0])
    with pytest.raises(DataFileError, match=r"missing data file .*nope\.csv"):
        tabular_from_csv(tmp_path / "nope.csv", cont_names=["temp"])
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(ImportError, match=r"pip install 'jaxlearn\[tabular\]'"):
        tabular_from_csv(tmp_path / "table.csv", cont_names=["temp"])


def test_tabular_model_learns_a_rule_from_a_frame_with_gaps():
    """y = a per-shop effect + 1.5·(standardized temp), or the effect + 3 when temp is missing: the model needs
    the shop embedding, the normalized column and the temp_na flag."""
    rng = np.random.default_rng(0)
    n = 600
    shops = rng.choice(list("abcde"), n)
    temp = rng.normal(20, 5, n)
    temp[rng.random(n) < 0.1] = np.nan
    effect = {"a": -2.0, "b": -1.0, "c": 0.0, "d": 1.0, "e": 2.0}
    y = np.array([effect[s] for s in shops]) + np.where(np.isnan(temp), 3.0, (temp - 20) / 5 * 1.5)
    dls = tabular_from_df(pd.DataFrame({"shop": shops, "temp": temp, "target": y}), cat_names=["shop"],
                          cont_names=["temp"], batch_size=32)
    assert dls.info["cont_names"] == ("temp", "temp_na")
    model = TabularModel(dls.info["cardinalities"], dls.info["n_cont"], layers=(32,), ps=(0.0,), emb_drop=0.0)
    learn = adam_learner(model, dls)
    before = learn.evaluate()["loss"]
    learn.fit(6)
    after = learn.evaluate()["loss"]
    assert after < 0.05 * before and after < 0.1 * np.var(y), (before, after, np.var(y))


# ----------------------------------------------------------------------------------------------- text

TEXT = "the cat sat on the mat. " * 40 + "Zebra!"  # 966 characters; 'Z', 'b', 'r', '!' only in validation


def test_text_loaders_on_your_own_file(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text(TEXT, encoding="utf-8")
    dls = text_loaders(path, "stateful", batch_size=4, bptt=8)
    vocab = dls.info["vocab"]
    assert vocab.itos == (PAD, UNK) + tuple(sorted(set(TEXT[:772])))  # int(966·0.8) = 772 training characters
    assert len(vocab) == 2 + 11 and dls.info["kind"] == "stateful"
    # 772 // 4 = 193 per stream → 24 slices of 8; 194 // 4 = 48 → 5 slices
    assert dls.train.x.shape == (24 * 4, 8) and dls.valid.x.shape == (5 * 4, 8) and dls.train.x.dtype == np.int32
    assert vocab.decode(np.asarray(dls.train.x[::4]).ravel()) == TEXT[:24 * 8]  # stream 0 reads the text
    assert vocab.decode(vocab.encode("Zebra!")) == UNK + "e" + UNK * 2 + "a" + UNK  # unseen in training: unknown
    # training counts: ' ' 193, 't' 161, 'a' 96, 'h' and 'e' 65, the others 32 or 33
    rare = text_loaders(text=TEXT.upper(), kind="windows", batch_size=4, bptt=3, min_freq=70, lower=True)
    assert rare.info["vocab"].itos == (PAD, UNK, " ", "a", "t")  # seen ≥ 70 times in training, lowercased
    assert rare.train.x.shape == (257, 3) and rare.train.shuffle


def test_text_loaders_errors_name_the_file_and_the_numbers(tmp_path):
    with pytest.raises(DataFileError, match=r"missing data file .*nope\.txt"):
        text_loaders(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataFileError, match=r"data file .*empty\.txt is empty"):
        text_loaders(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("naïve text".encode("latin-1"))
    with pytest.raises(DataFileError, match=r"corrupt data file .*latin1\.txt: not UTF-8 \(byte b'\\xef' at "
                                            r"offset 2\)"):
        text_loaders(tmp_path / "latin1.txt")
    (tmp_path / "short.txt").write_text("x" * 1000)
    with pytest.raises(DataFileError, match=r"short\.txt is too short for kind 'stateful' with batch_size 64 and "
                                            r"bptt 8: its 1,000 characters split into 800 for training and 200 "
                                            r"for validation \(valid_pct 0.2\), which need at least 576 and 576"):
        text_loaders(tmp_path / "short.txt")
    with pytest.raises(ValueError, match=r"pass either a file's path or text=\.\.\., not both"):
        text_loaders(tmp_path / "short.txt", text="abc")
    with pytest.raises(DataFileError, match=r"the text: the text contains the reserved unknown '\\ufffd' character "
                                            r"at offset 3"):
        text_loaders(text="abc\ufffd" * 500, batch_size=4)


# ----------------------------------------------------------------------------------- tfds image datasets

@pytest.fixture(scope="module")
def tfds():
    """tensorflow_datasets, imported once for these tests (TensorFlow's import takes seconds)."""
    return pytest.importorskip("tensorflow_datasets")


# without prepared metadata the mock knows cifar10's 10 classes but not their names (set while preparing)
@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_any_tfds_image_dataset_by_name(tfds, tmp_path, name, shape):
    classes = tuple("0123456789")
    with tfds.testing.mock_data(num_examples=12):
        dls = load_dataset(name, batch_size=4, manual_dir=tmp_path, data_dir=tmp_path, n_train=10)
    assert dls.train.x.shape == (10, *shape) and dls.valid.x.shape == (12, *shape)
    assert dls.train.x.dtype == np.uint8 and dls.train.y.dtype == dls.valid.y.dtype == np.int32
    assert 0 <= int(dls.train.y.min()) and int(dls.train.y.max()) < len(classes)
    assert dls.info["classes"] == classes and dls.info["splits"] == ("train", "test")
    assert dls.train.transform(dls.train.x[:1]).dtype == np.float32  # pixels scaled like Fashion-MNIST's


def test_tfds_names_and_features_are_checked(tfds, tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'mnistt' \(did you mean 'mnist'\?\): known datasets are "
                                         r"'fashion_mnist', 'names', and the image-classification"):
        load_dataset("mnistt")
    with pytest.raises(ValueError, match=r"unknown dataset 'Fashion-MNIST' \(did you mean 'fashion_mnist'\?\)"):
        load_dataset("Fashion-MNIST")
    with pytest.raises(ValueError, match=r"dataset 'squad' is not image classification: its features are \{.*"
                                         r"'context': Text.*\}; expected an 'image' \(tfds.features.Image\) and a "
                                         r"'label' \(tfds.features.ClassLabel\)"):
        load_dataset("squad", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"dataset 'imagenette': its images are uint8 of shape \(None, None, 3\)"):
        load_dataset("imagenette", data_dir=tmp_path)


def test_tfds_offline_without_prepared_data_fails_fast(tfds, tmp_path, monkeypatch):
    def offline(address, timeout=None):
        raise OSError("network is unreachable")
    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.setattr(urllib.request, "getproxies", dict)
    with pytest.raises(DataFileError, match=r"cannot download the tfds dataset 'mnist': storage.googleapis.com:443 "
                                            r"is unreachable .*data_dir=.*manual_dir=.*train-images-idx3-ubyte\.gz"):
        load_dataset("mnist", data_dir=tmp_path)
    assert not any(tmp_path.rglob("*.tfrecord*"))



def test_tfds_validation_split_is_used_when_the_builder_names_one():
    assert pick_splits("x", ["train", "validation", "test"]) == ("train", "validation")
    assert pick_splits("x", ["test", "train"]) == pick_splits("x", []) == ("train", "test")
    with pytest.raises(DataFileError, match=r"dataset 'x' has the splits \['train', 'unlabelled'\]; expected 'train' "
                                            r"and 'validation' or 'test'"):
        pick_splits("x", ["train", "unlabelled"])
