"""Fashion-MNIST's failures are loud and quick: no network, changed source files, a damaged prepared cache.

Every test has its own ``JAXLEARN_CACHE_DIR``: the user's cache is never touched. Preparing through tfds takes
~30 s, so the module prepares once, in the shared fixture; the rebuild of a damaged cache copies that back.
"""

import gzip
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from jaxlearn import data
from jaxlearn.data import fashion
from jaxlearn.data import DataFileError

SOURCE = os.environ.get(data.FASHION_MNIST_ENV)
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")
needs_files = pytest.mark.skipif(SOURCE is None,
                                 reason=f"needs the four Fashion-MNIST files: set {data.FASHION_MNIST_ENV}")


def test_offline_without_the_data_variable_fails_in_seconds(monkeypatch, tmp_path):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.delenv(data.FASHION_MNIST_ENV, raising=False)
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))  # nothing prepared: tfds would download

    def offline(address, timeout=None, *args, **kwargs):
        assert timeout is not None and timeout <= 3  # a quick check, not tfds' minutes of retries
        raise OSError(f"simulated: no route to {address[0]}")
    monkeypatch.setattr(socket, "create_connection", offline)
    start = time.perf_counter()
    with pytest.raises(DataFileError) as info:
        data.fashion_mnist()
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "cannot download Fashion-MNIST" in message and "simulated: no route" in message
    assert data.FASHION_MNIST_ENV in message and all(f in message for f in FILES)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A copy of the four files, and the cache prepared from them under a private JAXLEARN_CACHE_DIR."""
    pytest.importorskip("tensorflow_datasets")
    manual, cache = tmp_path_factory.mktemp("manual"), tmp_path_factory.mktemp("cache")
    for f in FILES:
        shutil.copy(Path(SOURCE) / f, manual / f)
    with pytest.MonkeyPatch.context() as m:
        m.setenv(data.CACHE_ENV, str(cache))
        first = data.fashion_mnist(manual)
    (key_dir,) = (cache / "tfds").iterdir()
    return manual, cache, key_dir, first


@pytest.fixture
def cache_env(prepared, monkeypatch):
    monkeypatch.setenv(data.CACHE_ENV, str(prepared[1]))
    return prepared


def assert_same(a, b):
    for split in ("train", "test"):
        assert all(np.array_equal(u, v) for u, v in zip(a[split], b[split]))


@needs_files
def test_the_cache_is_named_by_the_files_checksums(cache_env):
    manual, _, key_dir, first = cache_env
    assert key_dir.name == fashion._cache_key({f: fashion._sha256(manual / f) for f in FILES})
    assert first["train"][0].shape == (60_000, 28, 28, 1) and first["test"][1].shape == (10_000,)
    assert_same(data.fashion_mnist(manual), first)  # read back from the cache, not prepared again


@needs_files
def test_changed_source_files_are_read_not_the_stale_cache(cache_env, tmp_path):
    manual, _, key_dir, first = cache_env
    changed = tmp_path / "changed"
    shutil.copytree(manual, changed)
    with gzip.open(changed / "train-labels-idx1-ubyte.gz", "rb") as f:
        raw = f.read()
    labels = np.random.default_rng(0).permutation(np.frombuffer(raw, np.uint8, offset=8))
    with gzip.open(changed / "train-labels-idx1-ubyte.gz", "wb") as f:  # still a valid IDX file
        f.write(raw[:8] + labels.tobytes())
    before = sorted(p.name for p in key_dir.parent.iterdir())
    with pytest.warns(UserWarning, match=r"train-labels-idx1-ubyte\.gz in .*changed differ from the official "
                                         r"Fashion-MNIST files .*reading the four IDX files directly"):
        got = data.fashion_mnist(changed)
    np.testing.assert_array_equal(got["train"][1], labels)  # the changed labels, in file order
    np.testing.assert_array_equal(got["test"][1], data.check_fashion_mnist_dir(manual)["test"][1])
    assert sorted(p.name for p in key_dir.parent.iterdir()) == before  # the cache was neither used nor changed


@needs_files
def test_a_damaged_prepared_cache_is_rebuilt(cache_env, monkeypatch, tmp_path):
    manual, _, key_dir, first = cache_env
    # tfds' preparation itself (~30 s) is the fixture's: here a pristine copy stands in for preparing it again
    pristine = shutil.copytree(key_dir / "fashion_mnist", tmp_path / "pristine")
    real, calls = fashion._prepare_and_read, []

    def prepare_again(tfds, data_dir, manual_dir):
        calls.append((data_dir / "fashion_mnist").exists())
        if not calls[-1]:  # deleted as unreadable: "prepare" it again
            shutil.copytree(pristine, data_dir / "fashion_mnist")
        return real(tfds, data_dir, manual_dir)
    monkeypatch.setattr(fashion, "_prepare_and_read", prepare_again)
    (record,) = [p for p in key_dir.rglob("*train*") if "record" in p.name]
    raw = bytearray(record.read_bytes())
    for i in range(len(raw) // 3, len(raw) // 3 + 64):
        raw[i] ^= 0xFF
    record.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match=rf"prepared Fashion-MNIST cache {key_dir / 'fashion_mnist'} is unreadable "
                                         r"\(DataLossError: .*deleting it and preparing it again"):
        assert_same(data.fashion_mnist(manual), first)
    assert calls == [True, False]  # read the damaged cache, deleted it, prepared again
    assert_same(data.fashion_mnist(manual), first)  # the rebuilt cache reads cleanly
    assert calls == [True, False, True]


def test_a_cache_that_stays_unreadable_names_its_folder(monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    (tmp_path / "fashion_mnist" / "3.0.1").mkdir(parents=True)

    def unreadable(*args):
        raise OSError("simulated: record 123 is corrupted")
    monkeypatch.setattr(fashion, "_prepare_and_read", unreadable)
    with pytest.warns(UserWarning, match="deleting it and preparing it again"), \
            pytest.raises(DataFileError, match=rf"preparing Fashion-MNIST in the cache {tmp_path / 'fashion_mnist'} "
                                               r"failed \(OSError: simulated: record 123 is corrupted\)"):
        fashion._from_prepared_cache(tfds, tmp_path, None)


def test_processes_loading_at_once_prepare_the_cache_one_at_a_time(monkeypatch, tmp_path):
    """The suite's workers (and two experiments) may load Fashion-MNIST at the same moment into one cache: the
    preparation is serialized (threads stand in for processes: the lock is per open file)."""
    import threading
    inside, overlaps = [], []

    def prepare(tfds, data_dir, manual_dir):
        inside.append(1)
        overlaps.append(len(inside) > 1)
        time.sleep(0.3)
        inside.pop()
        return {}
    monkeypatch.setattr(fashion, "_prepare_and_read", prepare)
    threads = [threading.Thread(target=fashion._from_prepared_cache, args=(None, tmp_path / "key", None))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [False, False, False]
