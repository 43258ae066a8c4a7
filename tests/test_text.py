"""The Nietzsche text of fast.ai 2018 lessons 6–7 (jaxlearn.text): file checks, vocabulary, splits, datasets."""

import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from jaxlearn.text import data as T
from jaxlearn.data import ArrayDataset, DataFileError


@pytest.fixture(scope="module")
def text_path() -> Path:
    path = os.environ.get(T.NIETZSCHE_ENV)
    if path is None:
        pytest.skip(f"nietzsche.txt not available: set {T.NIETZSCHE_ENV} to its path")
    return Path(path)


@pytest.fixture(scope="module")
def text(text_path) -> str:
    return T.load_nietzsche(text_path)


@pytest.fixture(scope="module")
def vocab_ids(text):
    vocab = T.CharVocab.from_text(text)
    return vocab, vocab.encode(text)


# ----------------------------------------------------------------------------------------- the file

def test_text_loads_with_its_documented_length_and_ends(text):
    assert len(text) == T.NIETZSCHE_CHARS == 600_893
    assert text.startswith("PREFACE\n\n\nSUPPOSING that Truth is a woman")
    assert text.endswith("the indications of sinfulness.")
    assert text.count("\n") == 9_934


def test_vocab_is_every_character_plus_padding(text, vocab_ids):
    vocab, ids = vocab_ids
    assert len(vocab) == 85  # 84 distinct characters + the padding id 0 (lesson 6: "85 chars + padding")
    assert vocab.itos[0] == T.PAD and vocab.stoi["\n"] == 1
    assert {"Æ", "ä", "æ", "é", "ë", "A", "a"} <= set(vocab.itos)  # raw text: neither lowercased nor ASCII-only
    assert ids.dtype == np.int32 and len(ids) == len(text) and ids.min() == 1
    assert vocab.decode(ids) == text
    assert [vocab.stoi[c] for c in "Truth"] == vocab.encode("Truth").tolist()
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode("naïve")


def test_lesson7_vocab_is_torchtexts_lowercase_min_freq_3(text, text_path):
    n_train = len(T.split_ids(np.arange(len(text)))[0])
    vocab = T.CharVocab.lesson7(text[:n_train])
    assert len(vocab) == 56  # lesson 7: md.nt == 56
    assert vocab.itos[:2] == (T.PAD, T.UNK) and vocab.lower
    assert not any(c.isupper() for c in vocab.itos) and "æ" not in vocab.itos  # 'æ' once in training
    assert vocab.encode("Truth").tolist() == vocab.encode("truth").tolist()
    assert vocab.encode("æon").tolist() == [1, vocab.stoi["o"], vocab.stoi["n"]]  # rare characters → <unk>
    assert vocab.decode(vocab.encode("Beyond Good")) == "beyond good"
    char_vocab, train, valid = T.nietzsche_splits(text_path, vocab="lesson7")
    assert char_vocab == vocab and (len(train), len(valid)) == (480_714, 120_179)
    assert (train == 1).sum() == 2 and (valid == 1).sum() == 3  # 'æ', 'ë' in training; 'é' twice, 'æ' after
    dls = T.nietzsche_loaders("stateful", batch_size=64, bptt=8, path=text_path, vocab="lesson7")
    assert dls.info["vocab"] == vocab and dls.train.x.max() < 56
    with pytest.raises(ValueError, match="unknown vocab 'lesson8'"):
        T.nietzsche_splits(text_path, vocab="lesson8")
    with pytest.raises(ValueError, match="min_freq must be a positive integer"):
        T.CharVocab.from_text("abc", min_freq=0)


def test_split_is_first_80_and_last_20_percent(vocab_ids):
    _, ids = vocab_ids
    train, valid = T.split_ids(ids)
    assert (len(train), len(valid)) == (480_714, 120_179)
    np.testing.assert_array_equal(np.concatenate([train, valid]), ids)


# ------------------------------------------------------------------------------------------ datasets

def test_char_windows_non_overlapping(vocab_ids):
    _, ids = vocab_ids
    x, y = T.char_windows(ids, 3)
    assert x.shape == (200_297, 3) and y.shape == (200_297,) and x.dtype == y.dtype == np.int32
    np.testing.assert_array_equal(x.ravel(), ids[:x.size])  # groups of 3, one after the other
    np.testing.assert_array_equal(y[:-1], x[1:, 0])  # the target is the next group's first character
    assert y[-1] == ids[x.size]


def test_char_windows_overlapping(vocab_ids):
    _, ids = vocab_ids
    x, y = T.char_windows(ids, 8, step=1)
    assert x.shape == (len(ids) - 8, 8) and y.shape == (len(ids) - 8,)
    np.testing.assert_array_equal(x[:, 0], ids[:-8])
    np.testing.assert_array_equal(x[1:, :-1], x[:-1, 1:])  # each window is the previous one shifted by one
    np.testing.assert_array_equal(y[:-1], x[1:, -1])  # the target is the next window's last character
    np.testing.assert_array_equal(y, ids[8:])


def test_char_sequences_targets_are_inputs_shifted_by_one(vocab_ids):
    _, ids = vocab_ids
    x, y = T.char_sequences(ids, 8)
    assert x.shape == y.shape == ((len(ids) - 8 + 7) // 8, 8) and x.dtype == np.int32
    np.testing.assert_array_equal(x.ravel(), ids[:x.size])
    np.testing.assert_array_equal(y.ravel(), ids[1:x.size + 1])
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])


def _batches(x, y, bs):
    ds = ArrayDataset(x, y, bs, shuffle=False, drop_last=True, transform=lambda a: a)
    idx, weight = ds.epoch_indices(0)
    assert bool((weight == 1).all())
    idx = np.asarray(idx)
    return np.asarray(ds.x)[idx], np.asarray(ds.y)[idx]  # (n_batches, bs, bptt) each


def test_stream_batches_layout_on_positions():
    ids = np.arange(1003, dtype=np.int32)  # ids = positions: 4 streams of 250 (the tail of 3 is dropped)
    x, y = T.stream_batches(ids, batch_size=4, bptt=5)
    assert x.shape == y.shape == (49 * 4, 5)  # (250 - 1) // 5 = 49 slices per stream
    xb, yb = _batches(x, y, 4)
    assert xb.shape == (49, 4, 5)
    for j in range(4):
        np.testing.assert_array_equal(xb[:, j].ravel(), np.arange(j * 250, j * 250 + 245))
        np.testing.assert_array_equal(yb[:, j].ravel(), np.arange(j * 250 + 1, j * 250 + 246))


def test_stream_batches_continue_stream_by_stream(vocab_ids):
    vocab, ids = vocab_ids
    train, _ = T.split_ids(ids)
    bs, bptt = 64, 8
    x, y = T.stream_batches(train, bs, bptt)
    length = len(train) // bs
    assert x.shape == y.shape == ((length - 1) // bptt * bs, bptt) and x.dtype == np.int32
    xb, yb = _batches(x, y, bs)
    np.testing.assert_array_equal(yb[:, :, :-1], xb[:, :, 1:])  # targets: inputs shifted by one
    np.testing.assert_array_equal(xb[1:, :, 0], yb[:-1, :, -1])  # batch k+1 row j continues batch k row j
    for j in (0, 1, 37, bs - 1):  # and the rows of one stream spell out its part of the text
        np.testing.assert_array_equal(xb[:, j].ravel(), train[j * length: j * length + xb.shape[0] * bptt])
    assert vocab.decode(xb[:4, 0].ravel()) == "PREFACE\n\n\nSUPPOSING that Truth is"[:32]


def test_builders_reject_too_little_text():
    with pytest.raises(ValueError, match="too few"):
        T.char_windows(np.arange(3), 3)
    with pytest.raises(ValueError, match="too few"):
        T.stream_batches(np.arange(100), batch_size=64, bptt=8)
    with pytest.raises(ValueError, match="positive"):
        T.stream_batches(np.arange(100), batch_size=0)


@pytest.mark.parametrize("kind, shape", [("windows", (160_237, 3)), ("overlapping", (480_706, 8)),
                                         ("sequences", (60_089, 8)), ("stateful", (60_032, 8))])
def test_loaders(text_path, kind, shape):
    bptt = 3 if kind == "windows" else 8
    dls = T.nietzsche_loaders(kind, batch_size=64, bptt=bptt, path=text_path)
    assert dls.train.x.shape == shape and dls.train.x.dtype == np.int32
    assert len(dls.info["vocab"]) == 85 and dls.info["kind"] == kind and dls.info["bptt"] == bptt
    for ds in (dls.train, dls.valid):  # ids are not scaled
        np.testing.assert_array_equal(ds.transform(ds.x[:2]), ds.x[:2])
        assert ds.transform(ds.x[:2]).dtype == np.int32
    stateful = kind == "stateful"
    assert dls.train.shuffle is not stateful and dls.train.drop_last is stateful
    assert dls.valid.batch_size == (64 if stateful else 128) and not dls.valid.shuffle


def test_random_split_is_get_cv_idxs():
    # fastai 0.7: np.random.seed(42); idxs = np.random.permutation(n); idxs[:int(0.2 * n)]
    np.random.seed(42)
    theirs = np.random.permutation(1000)[:200]
    train, valid = T.random_split(1000)
    np.testing.assert_array_equal(valid, theirs)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, valid])), np.arange(1000))


def test_lesson6_random_split_draws_validation_windows_from_the_whole_text(text_path, vocab_ids):
    vocab, ids = vocab_ids
    dls = T.nietzsche_loaders("overlapping", 512, 8, path=text_path, split="random")
    x, y = T.char_windows(ids, 8, step=1)
    train, valid = T.random_split(len(x))
    np.testing.assert_array_equal(dls.valid.x, x[valid])
    np.testing.assert_array_equal(dls.train.y, y[train])
    assert len(dls.info["vocab"]) == 85
    assert valid.max() > 0.9 * len(x) and valid.min() < 0.1 * len(x)  # not the end of the text: anywhere
    with pytest.raises(ValueError, match="cannot keep the streams of kind 'stateful'"):
        T.nietzsche_loaders("stateful", path=text_path, split="random")
    with pytest.raises(ValueError, match="unknown split 'start'"):
        T.nietzsche_loaders("overlapping", path=text_path, split="start")


def test_loaders_reject_unknown_kind():
    with pytest.raises(ValueError, match="unknown kind 'lstm'"):
        T.nietzsche_loaders("lstm")


# --------------------------------------------------------------------------------------- bad files

def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataFileError, match=rf"{tmp_path.name}.*nope\.txt.*{T.NIETZSCHE_ENV}"):
        T.load_nietzsche(tmp_path / "nope.txt")


def test_bad_copies_are_named_with_what_was_expected(tmp_path, text):
    raw = text.encode("utf-8")
    cases = {
        "truncated.txt": (raw[:100_000], r"100,000 characters, expected .*600,893"),
        "latin1.txt": (text.encode("latin-1"), r"not UTF-8"),
        "crlf.txt": (text.replace("\n", "\r\n").encode("utf-8"), r"610,827 characters"),
        "bom.txt": (b"\xef\xbb\xbf" + raw, r"600,894 characters"),
        "edited.txt": (raw.replace(b"woman", b"WOMAN", 1), r"sha256 .* expected " + T.NIETZSCHE_SHA256),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DataFileError, match=rf"{name}.*{message}"):
            T.load_nietzsche(path)
    # a copy of the right length with other bytes is accepted when asked to
    edited = T.load_nietzsche(tmp_path / "edited.txt", check_sha256=False)
    assert edited.startswith("PREFACE\n\n\nSUPPOSING that Truth is a WOMAN")


def test_env_var_is_read(monkeypatch, text_path):
    monkeypatch.setenv(T.NIETZSCHE_ENV, str(text_path))
    assert len(T.load_nietzsche()) == 600_893


def test_offline_download_fails_fast_naming_the_env_var(monkeypatch, tmp_path):
    monkeypatch.delenv(T.NIETZSCHE_ENV, raising=False)
    monkeypatch.setenv("JAXLEARN_CACHE_DIR", str(tmp_path))

    def offline(url, timeout):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataFileError, match=rf"could not download .*nietzsche\.txt.*{T.NIETZSCHE_ENV}"):
        T.load_nietzsche()
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind


def test_download_once_into_the_cache(monkeypatch, tmp_path, text_path):
    monkeypatch.delenv(T.NIETZSCHE_ENV, raising=False)
    monkeypatch.setenv("JAXLEARN_CACHE_DIR", str(tmp_path))
    calls = []

    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return text_path.read_bytes()

    def fake_urlopen(url, timeout):
        calls.append(url)
        return Response()
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    assert len(T.load_nietzsche()) == 600_893
    assert len(T.load_nietzsche()) == 600_893
    assert calls == [T.NIETZSCHE_URL]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nietzsche.txt"]
