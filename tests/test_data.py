import gzip
import struct

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import data
from jaxlearn.data import ArrayDataset, DataFileError


def test_names_split_matches_lecture(monkeypatch):
    words = data.load_names()
    assert len(words) == 32_033
    vocab, splits = data.names_splits(words, block_size=3)
    assert vocab.itos[0] == "." and vocab.stoi["a"] == 1 and vocab.stoi["z"] == 26 and len(vocab) == 27
    assert {k: len(v[0]) for k, v in splits.items()} == {"train": 182_625, "valid": 22_655, "test": 22_866}
    x, y = splits["train"]
    # The lecture's first shuffled name is 'yuheng': contexts ... → y, .y → u, .yu → h
    np.testing.assert_array_equal(x[:3], [[0, 0, 0], [0, 0, 25], [0, 25, 21]])
    np.testing.assert_array_equal(y[:3], [25, 21, 8])


def test_context_windows_round_trip():
    vocab = data.Vocab.from_words(["ab", "ba"])
    x, y = data.context_windows(["ab"], vocab, block_size=2)
    np.testing.assert_array_equal(x, [[0, 0], [0, 1], [1, 2]])
    assert vocab.decode(y) == "ab."


@pytest.mark.parametrize("n,bs", [(10, 4), (12, 4), (7, 7)])
def test_epoch_covers_every_example_once(n, bs):
    ds = ArrayDataset(np.arange(n), np.arange(n), bs, shuffle=True, seed=3)
    for epoch in range(3):
        idx, w = map(np.asarray, ds.epoch_indices(epoch))
        assert idx.shape == w.shape == (-(-n // bs), bs)
        np.testing.assert_array_equal(np.sort(idx[w == 1]), np.arange(n))
        assert (w == 0).sum() == idx.size - n
    orders = [np.asarray(ds.epoch_indices(e)[0]).ravel()[:n].tolist() for e in range(3)]
    assert orders[0] != orders[1], "each epoch reshuffles"
    np.testing.assert_array_equal(ds.epoch_indices(1)[0], ds.epoch_indices(1)[0])  # seeded


def test_drop_last_batches_are_full_and_distinct():
    ds = ArrayDataset(np.arange(10), np.arange(10), 4, shuffle=True, drop_last=True)
    idx, w = map(np.asarray, ds.epoch_indices(0))
    assert idx.shape == (2, 4) and w.min() == 1 and len(set(idx.ravel())) == 8


def test_bad_batch_sizes_are_refused():
    with pytest.raises(ValueError, match="positive"):
        ArrayDataset(np.zeros(5), np.zeros(5), 0)
    with pytest.raises(ValueError, match="larger than the dataset"):
        ArrayDataset(np.zeros(5), np.zeros(5), 6)
    with pytest.raises(ValueError, match="std must be positive"):
        data.normalize(0.3, 0.0)


def _write_idx(path, header, body=b""):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(f">{len(header)}I", *header) + body)


def test_missing_file_names_path_and_variable(tmp_path):
    with pytest.raises(DataFileError, match=r"train-images-idx3-ubyte\.gz.*JAXLEARN_FASHION_MNIST_DIR"):
        data.check_fashion_mnist_dir(tmp_path)
    with pytest.raises(DataFileError, match=r"nope\.txt.*JAXLEARN_NAMES_PATH"):
        data.load_names(tmp_path / "nope.txt")


def test_corrupt_files_are_named(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(b"this is not gzip")
    with pytest.raises(DataFileError, match=r"corrupt data file .*train-images.*gzip"):
        data.check_fashion_mnist_dir(tmp_path)
    _write_idx(bad, (2049, 60000, 28, 28))
    with pytest.raises(DataFileError, match=r"header .* \(2049, 60000, 28, 28\), expected \(2051, 60000, 28, 28\)"):
        data.check_fashion_mnist_dir(tmp_path)
    _write_idx(bad, (2051, 60000, 28, 28), b"\0" * 100)  # truncated body
    with pytest.raises(DataFileError, match=r"100 data bytes, expected 60000"):
        data.check_fashion_mnist_dir(tmp_path)
    names = tmp_path / "names.txt"
    names.write_text("emma\nOlivia3\n")
    with pytest.raises(DataFileError, match="corrupt data file .*names.txt"):
        data.load_names(names)


def test_fashion_mnist_through_tfds_equals_the_idx_files(fashion):
    import os
    raw = data.check_fashion_mnist_dir(os.environ[data.FASHION_MNIST_ENV])
    for split, n in (("train", 60_000), ("test", 10_000)):
        x, y = fashion[split]
        chex.assert_shape(x, (n, 28, 28, 1))
        assert x.dtype == np.uint8 and y.dtype == np.int32 and set(np.unique(y)) == set(range(10))
        # tfds shuffles at preparation: compare the (image, label) pairs as multisets with our IDX reader
        pairs = sorted(zip(map(bytes, x.reshape(n, -1)), y.tolist()))
        assert pairs == sorted(zip(map(bytes, raw[split][0].reshape(n, -1)), raw[split][1].tolist()))


def test_to_float_and_normalize():
    x = jnp.array([0, 255], jnp.uint8)
    chex.assert_trees_all_close(data.to_float(x), jnp.array([0.0, 1.0]))
    chex.assert_trees_all_close(data.normalize(0.5, 0.25)(jnp.array([0.0, 1.0])), jnp.array([-2.0, 2.0]))
