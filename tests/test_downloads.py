"""Every download fails in seconds, naming the URL and the environment variable to set instead: offline, or
behind a proxy that accepts connections and never answers (a local socket that is never read)."""

import functools
import http.server
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from jaxlearn.collab import movielens
from jaxlearn.data import fashion, files, names, tfds_images
from jaxlearn.data import DataFileError
from jaxlearn.text import data as text_data

LOADERS = {  # name: (load, the variable that makes it read local files, the URL it downloads)
    "names": (names.load_names, names.NAMES_ENV, names.NAMES_URL),
    "nietzsche": (text_data.load_nietzsche, text_data.NIETZSCHE_ENV, text_data.NIETZSCHE_URL),
    "movielens": (functools.partial(movielens.load_ratings, "ml-100k"), movielens.MOVIELENS_ENV,
                  movielens.MOVIELENS_URL.format(name="ml-100k")),
}


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    """No data variable set and an empty cache: every loader must download."""
    for _, env, _ in LOADERS.values():
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv(files.CACHE_ENV, str(tmp_path))
    return tmp_path


@pytest.fixture
def silent_proxy(monkeypatch):
    """A proxy at 127.0.0.1 that accepts connections (the kernel's backlog does) and never answers; urllib's
    opener, which read the proxy variables when first built, is rebuilt for the test."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    address = f"http://127.0.0.1:{server.getsockname()[1]}"
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, address)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)
    yield address
    server.close()


@pytest.fixture
def short_timeouts(monkeypatch):
    """urlopen as it is, but each call's timeout (which must be given, and at most 30 s) cut to 0.5 s: the
    test waits half a second where a user would wait the timeout asked for (and read in the message). Returns
    the timeouts asked for."""
    asked, real_urlopen = [], urllib.request.urlopen

    def urlopen(url, data=None, timeout=None, **kwargs):
        asked.append(timeout)
        assert timeout is not None and timeout <= 30, f"a download without a timeout of at most 30 s: {timeout}"
        return real_urlopen(url, data, timeout=0.5, **kwargs)
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return asked


def files_in(folder):
    return [p for p in folder.rglob("*") if p.is_file()]


@pytest.mark.parametrize("name", LOADERS)
def test_offline_download_names_the_url_and_the_variable(name, empty_cache, monkeypatch):
    load, env, url = LOADERS[name]
    timeouts = []

    def offline(url, data=None, timeout=None, **kwargs):
        timeouts.append(timeout)
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataFileError) as info:
        load()
    message = str(info.value)
    assert url in message and env in message and "Network is unreachable" in message
    assert timeouts and all(t is not None and t <= 30 for t in timeouts)
    assert files_in(empty_cache) == []  # nothing half-written is left behind


@pytest.mark.parametrize("name", LOADERS)
def test_a_proxy_that_never_answers_fails_in_seconds(name, empty_cache, silent_proxy, short_timeouts):
    load, env, url = LOADERS[name]
    start = time.perf_counter()
    with pytest.raises(DataFileError) as info:
        load()
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert f"no answer within {files.DOWNLOAD_TIMEOUT_S:g} s" in message and url in message and env in message
    assert short_timeouts == [files.DOWNLOAD_TIMEOUT_S] and files.DOWNLOAD_TIMEOUT_S <= 30
    assert files_in(empty_cache) == []


def test_fashion_mnist_behind_a_silent_proxy_fails_in_seconds(silent_proxy, short_timeouts):
    """The check made before tfds downloads (tfds itself would wait on the proxy for minutes)."""
    url = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    start = time.perf_counter()
    with pytest.raises(DataFileError) as info:
        fashion._require_download_host(url)
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert message.startswith(f"cannot download Fashion-MNIST: {url} did not answer through the proxy "
                              f"{silent_proxy.removeprefix('http://')} "
                              f"(no answer within {files.DOWNLOAD_TIMEOUT_S:g} s)")
    assert fashion.FASHION_MNIST_ENV in message and "train-images-idx3-ubyte.gz" in message
    assert short_timeouts and all(t <= 30 for t in short_timeouts)


def test_tfds_dataset_behind_a_silent_proxy_fails_in_seconds(silent_proxy, short_timeouts):
    url = "https://storage.googleapis.com/cvdf-datasets/mnist/train-images-idx3-ubyte.gz"
    builder = SimpleNamespace(name="mnist", version="3.0.1",
                              url_infos={url: SimpleNamespace(filename="train-images-idx3-ubyte.gz")})
    with pytest.raises(DataFileError) as info:
        tfds_images._require_download_host("mnist", builder)
    assert re.match(rf"cannot download the tfds dataset 'mnist': {re.escape(url)} did not answer through the proxy "
                    rf"127\.0\.0\.1:\d+ \(no answer within {files.DOWNLOAD_TIMEOUT_S:g} s\)\. Offline, pass data_dir=.*"
                    r"manual_dir=.*\(train-images-idx3-ubyte\.gz\)$", str(info.value))


def test_a_host_that_answers_passes_the_check_and_download_fetches_the_file(tmp_path, monkeypatch):
    """A real HTTP server on 127.0.0.1: any status answers the check (405 to HEAD included), download writes
    the file under its own name only."""
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "names.txt").write_text("emma\nolivia\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "served"))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1")
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        files.require_download_host(f"{base}/names.txt", "names", "set X")
        files.require_download_host(f"{base}/nothing-here", "names", "set X")  # a 404 is an answer
        dest = files.download(f"{base}/names.txt", tmp_path / "cache" / "names.txt", "set X")
        assert dest.read_text() == "emma\nolivia\n" and files_in(tmp_path / "cache") == [dest]
        with pytest.raises(DataFileError, match=rf"could not download {base}/gone\.txt to .*gone\.txt \(HTTPError: "
                                                r"HTTP Error 404.*\); offline, set X$"):
            files.download(f"{base}/gone.txt", tmp_path / "cache" / "gone.txt", "set X")
        assert files_in(tmp_path / "cache") == [dest]
    finally:
        server.shutdown()
        server.server_close()
