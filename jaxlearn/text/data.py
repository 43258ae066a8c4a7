"""The Nietzsche text of fast.ai 2018 lessons 6–7 (or any text of yours): loading, the character vocabulary,
splits and datasets.

No training code: this module turns ``nietzsche.txt`` (600,893 characters of Helen Zimmern's translation of
*Beyond Good and Evil*, the file Keras' ``lstm_text_generation.py`` and the lessons download) into the int32
arrays each of the lessons' character models trains on.

* :func:`load_nietzsche` reads ``$JAXLEARN_NIETZSCHE_PATH``, or downloads the file once into
  :func:`jaxlearn.data.cache_dir`, and checks it (UTF-8, 600,893 characters, sha256).
* :class:`CharVocab`: lesson 6's vocabulary, every distinct character of the raw text (not lowercased) plus
  index 0 reserved for padding: 84 + 1 = **85** tokens (the lesson quotes "85 chars + padding", later 84/85);
  and lesson 7's (:meth:`CharVocab.lesson7`), torchtext's ``Field(lower=True, tokenize=list)`` with
  ``min_freq=3`` built on the training text: 54 lowercase characters + unknown + padding = **56** tokens.
* :func:`split_ids`: lesson 7's split, train = the first 80% of the characters, validation = the last 20%;
  :func:`random_split`: lesson 6's, a random 20% of the examples (fastai 0.7's ``get_cv_idxs``).
* Dataset builders (x → y), one per model of the lessons (:mod:`jaxlearn.text.models`):

  * ``char_windows(ids, 3)``: 3 chars (non-overlapping) → the 4th, for ``Char3Model``;
  * ``char_windows(ids, 8, step=1)``: every 8-char window → the 9th, for ``CharLoopModel`` and ``CharRnn``;
  * ``char_sequences(ids, 8)``: 8 chars → the same 8 shifted by one (non-overlapping), for ``CharSeqRnn``;
  * ``stream_batches(ids, 64, 8)``: 64 contiguous streams, batch ``i`` = the i-th 8-char slice of every
    stream, for ``StatefulCharRnn``.

* :func:`text_loaders` wraps them in :class:`jaxlearn.data.DataLoaders` (``info['vocab']``) for any UTF-8 text
  (your own file: ``text_loaders('mine.txt')``); :func:`nietzsche_loaders` is it on the checked lesson file.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from jaxlearn.data import ArrayDataset, DataFileError, DataLoaders, cache_dir, identity
from jaxlearn.data.files import download

NIETZSCHE_ENV = "JAXLEARN_NIETZSCHE_PATH"
"""The environment variable giving the path of ``nietzsche.txt`` (:func:`load_nietzsche`)."""
NIETZSCHE_URL = "https://s3.amazonaws.com/text-datasets/nietzsche.txt"
NIETZSCHE_CHARS = 600_893  # UTF-8 characters (600,901 bytes: 8 characters are non-ASCII)
"""The length of ``nietzsche.txt`` in characters (600,901 bytes: 8 characters are non-ASCII)."""
NIETZSCHE_SHA256 = "23cf69874ab69d3d256099ab530ea4be24d47d9675b673bcc67cbcd6298ec647"
VALID_PCT = 0.2  # lesson 7: the last 20% of the text is the validation set
PAD = "\0"  # index 0 of the vocabulary: lesson 6's padding character
UNK = "\ufffd"  # index 1 of lesson 7's vocabulary: torchtext's <unk>, for characters seen < min_freq times
LESSON7_MIN_FREQ = 3
SPLITS = ("end", "random")
"""The validation splits of :func:`text_loaders`: lesson 7's last ``valid_pct`` of the text, or lesson 6's random
``valid_pct`` of the examples (:func:`random_split`)."""
CV_SEED = 42  # fastai 0.7's get_cv_idxs(n, cv_idx=0, val_pct=0.2, seed=42)
VOCABS = ("lesson6", "lesson7")
"""The vocabularies :func:`nietzsche_splits` and :func:`nietzsche_loaders` build."""

KINDS = ("windows", "overlapping", "sequences", "stateful")
"""The batchings :func:`text_loaders` makes, one per kind of lesson model (see :func:`nietzsche_loaders`)."""


# ------------------------------------------------------------------------------------------------ file

def check_nietzsche(path: str | os.PathLike, check_sha256: bool = True) -> str:
    """Read ``path`` and check it is ``nietzsche.txt``; returns the text.

    Raises :class:`~jaxlearn.data.DataFileError`, naming the file and what was expected, when it is missing,
    not UTF-8, not 600,893 characters long (truncated, CRLF line endings, a BOM, re-encoded) or, with
    ``check_sha256``, not byte for byte the file described in ``shared/data/nietzsche/SOURCE.md``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"missing data file {path}: expected nietzsche.txt ({NIETZSCHE_CHARS:,} UTF-8 "
                            f"characters); set {NIETZSCHE_ENV} to its path")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataFileError(f"corrupt data file {path}: not UTF-8 ({e}); expected nietzsche.txt, "
                            f"{NIETZSCHE_CHARS:,} UTF-8 characters") from e
    if len(text) != NIETZSCHE_CHARS:
        raise DataFileError(f"corrupt data file {path}: {len(text):,} characters, expected nietzsche.txt's "
                            f"{NIETZSCHE_CHARS:,} (UTF-8, LF line endings, no BOM)")
    digest = hashlib.sha256(raw).hexdigest()
    if check_sha256 and digest != NIETZSCHE_SHA256:
        raise DataFileError(f"wrong data file {path}: sha256 {digest}, expected {NIETZSCHE_SHA256} "
                            f"(nietzsche.txt); pass check_sha256=False to accept another copy of the same "
                            f"length")
    return text


def load_nietzsche(path: str | os.PathLike | None = None, check_sha256: bool = True) -> str:
    """The checked text (:func:`check_nietzsche`, with ``check_sha256``): from ``path``,
    ``$JAXLEARN_NIETZSCHE_PATH``, or downloaded once to ``cache_dir()``."""
    path = path or os.environ.get(NIETZSCHE_ENV)
    if path is None:
        path = cache_dir() / "nietzsche.txt"
        if not path.is_file():
            download(NIETZSCHE_URL, path, f"set {NIETZSCHE_ENV} to a local nietzsche.txt")
    return check_nietzsche(path, check_sha256=check_sha256)


# ----------------------------------------------------------------------------------------------- vocab

@dataclass(frozen=True)
class CharVocab:
    """Characters ↔ ids. Lesson 6 style (the default): ``itos = [PAD] + sorted(set(text))``, no lowercasing.

    Index 0 is the padding character ``'\\0'`` (it never occurs in the text); :func:`jaxlearn.text.sampling.sample_text`
    left-pads short prompts of the window models with it. For nietzsche.txt ``len(vocab) == 85``.
    With ``lower`` the text is lowercased before encoding; with an unknown token (``unk``; by default when
    ``min_freq > 1``) characters seen fewer than ``min_freq`` times, or not at all, share the unknown id 1
    (:data:`UNK`), as in torchtext, instead of being an error. ``itos``: the character of each id.
    """
    itos: tuple[str, ...]
    lower: bool = False

    @classmethod
    def from_text(cls, text: str, lower: bool = False, min_freq: int = 1, unk: bool | None = None) -> CharVocab:
        """The vocabulary of ``text`` (lowercased with ``lower``): the padding character, the unknown token when
        ``unk`` (default: when ``min_freq > 1``), then every character seen at least ``min_freq`` times,
        sorted. A text holding a reserved character is a ValueError."""
        if not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be a positive integer, got {min_freq!r}")
        unk = min_freq > 1 if unk is None else unk
        reserved = {PAD: "padding '\\0'", **({UNK: "unknown '\\ufffd'"} if unk else {})}
        for char, name in reserved.items():
            if char in text:
                raise ValueError(f"the text contains the reserved {name} character at offset {text.index(char):,}")
        counts = Counter(text.lower() if lower else text)
        kept = tuple(sorted(c for c, n in counts.items() if n >= min_freq))
        return cls(((PAD, UNK) if unk else (PAD,)) + kept, lower)

    @classmethod
    def lesson7(cls, train_text: str) -> CharVocab:
        """Lesson 7's vocabulary: torchtext's ``Field(lower=True, tokenize=list)``, ``build_vocab(min_freq=3)``
        on the training text ``train_text``. For nietzsche.txt 56 tokens, as the lesson reports (``md.nt``)."""
        return cls.from_text(train_text, lower=True, min_freq=LESSON7_MIN_FREQ)

    @cached_property
    def stoi(self) -> dict[str, int]:
        """``{character: id}``, the inverse of ``itos``."""
        return {s: i for i, s in enumerate(self.itos)}

    @cached_property
    def _table(self) -> np.ndarray:
        """Code point → id lookup table (-1: not in the vocabulary)."""
        table = np.full(max(map(ord, self.itos)) + 1, -1, np.int32)
        table[[ord(c) for c in self.itos]] = np.arange(len(self.itos), dtype=np.int32)
        return table

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> np.ndarray:
        """int32 ids of ``text`` (vectorized: 600k characters in a few milliseconds)."""
        if self.lower:
            text = text.lower()
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = self._table
        ids = table[np.minimum(codes, len(table) - 1)]
        bad = (ids < 0) | (codes >= len(table))
        if bad.any() and UNK in self.stoi:
            ids = np.where(bad, np.int32(self.stoi[UNK]), ids)
        elif bad.any():
            raise ValueError(f"characters not in the vocabulary: {sorted(set(np.array(list(text))[bad]))!r}")
        return ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The characters of ``ids`` (any shape, read in order), joined."""
        return "".join(self.itos[i] for i in np.asarray(ids).ravel())


# ---------------------------------------------------------------------------------------------- splits

def split_ids(ids: np.ndarray | str, valid_pct: float = VALID_PCT) -> tuple[np.ndarray | str, np.ndarray | str]:
    """Lesson 7: train = the first ``1 - valid_pct`` of the characters, validation = the rest (in order).
    ``ids`` may also be the text itself.

    nietzsche.txt: 480,714 / 120,179 characters.
    """
    n_train = int(len(ids) * (1 - valid_pct))
    return ids[:n_train], ids[n_train:]


def random_split(n: int, valid_pct: float = VALID_PCT, seed: int = CV_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Lesson 6: ``(train_idx, valid_idx)`` of ``n`` examples, validation = a random ``valid_pct`` of them.

    ``valid_idx`` is fastai 0.7's ``get_cv_idxs(n, val_pct=valid_pct, seed=seed)``: the first
    ``int(valid_pct·n)`` of ``np.random.seed(seed); np.random.permutation(n)``; training = every other index,
    in order. Drawn from the whole text, the windows of the two sets overlap when the windows do (the
    CharLoopModel's): an easier test than lesson 7's held-out end of the text.
    """
    perm = np.random.RandomState(seed).permutation(n)
    n_valid = int(valid_pct * n)
    return np.sort(perm[n_valid:]), perm[:n_valid]


def nietzsche_splits(path: str | os.PathLike | None = None, vocab: str = "lesson6"
                     ) -> tuple[CharVocab, np.ndarray, np.ndarray]:
    """``(vocab, train_ids, valid_ids)`` of the checked text (``path`` as :func:`load_nietzsche`'s).
    ``vocab='lesson6'``: built from the whole text (as in lesson 6), 85 tokens; ``'lesson7'``:
    :meth:`CharVocab.lesson7` built from the training part, 56 tokens."""
    if vocab not in VOCABS:
        raise ValueError(f"unknown vocab {vocab!r}: expected one of {', '.join(map(repr, VOCABS))}")
    text = load_nietzsche(path)
    train_text = split_ids(text)[0]  # the characters split_ids gives to training (lowercasing keeps the length)
    char_vocab = CharVocab.lesson7(train_text) if vocab == "lesson7" else CharVocab.from_text(text)
    return (char_vocab, *split_ids(char_vocab.encode(text)))


# -------------------------------------------------------------------------------------------- datasets

def _starts(n_ids: int, n: int, step: int) -> np.ndarray:
    if n < 1 or step < 1:
        raise ValueError(f"window length and step must be positive, got {n} and {step}")
    if n_ids <= n:
        raise ValueError(f"{n_ids} characters are too few for windows of {n} plus a target")
    return np.arange(0, n_ids - n, step)


def char_windows(ids: np.ndarray, n: int, step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``x[k] = ids[s:s+n]`` → ``y[k] = ids[s+n]`` for the starts ``s = 0, step, 2·step, …``.

    ``step=None`` (= n): non-overlapping groups, lesson 6's Char3Model data with n=3 (``c1_dat … c4_dat``,
    200,297 examples for the whole text). ``step=1``: every window, the CharLoopModel's 8-char data
    (``len(ids) - 8`` examples). x int32 (N, n), y int32 (N,).
    """
    ids = np.asarray(ids, np.int32)
    starts = _starts(len(ids), n, n if step is None else step)
    return ids[starts[:, None] + np.arange(n)], ids[starts + n]


def char_sequences(ids: np.ndarray, bptt: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping ``bptt``-char sequences and the same shifted by one (lesson 6's CharSeqRnn).

    ``x[k] = ids[s:s+bptt]``, ``y[k] = ids[s+1:s+bptt+1]`` for ``s = 0, bptt, 2·bptt, …``: both (N, bptt).
    """
    ids = np.asarray(ids, np.int32)
    idx = _starts(len(ids), bptt, bptt)[:, None] + np.arange(bptt)
    return ids[idx], ids[idx + 1]


def stream_batches(ids: np.ndarray, batch_size: int = 64, bptt: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Lesson 7's stateful-RNN data: the text cut into ``batch_size`` equal contiguous streams.

    Stream ``j`` is ``ids[j·L : (j+1)·L]`` with ``L = len(ids) // batch_size`` (the ragged tail is dropped).
    Batch ``i`` holds the i-th ``bptt`` slice of every stream: row ``i·batch_size + j`` of x is
    ``stream_j[i·bptt : (i+1)·bptt]`` and of y the same shifted by one. So with
    ``ArrayDataset(x, y, batch_size, shuffle=False, drop_last=True)`` row j of batch ``i+1`` continues row j
    of batch ``i`` in the text, and the hidden state carried from batch to batch (``StatefulCharRnn``) is
    always the state of the same stream. x, y int32 (n_slices·batch_size, bptt) with
    ``n_slices = (L - 1) // bptt`` (torchtext's last, shorter slice is dropped: every batch is ``bptt`` long).
    """
    ids = np.asarray(ids, np.int32)
    if batch_size < 1 or bptt < 1:
        raise ValueError(f"batch_size and bptt must be positive, got {batch_size} and {bptt}")
    length = len(ids) // batch_size
    n_slices = (length - 1) // bptt
    if n_slices < 1:
        raise ValueError(f"{len(ids)} characters are too few for {batch_size} streams of {bptt}-char slices")
    streams = ids[:batch_size * length].reshape(batch_size, length)

    def rows(s: np.ndarray) -> np.ndarray:  # (batch_size, n_slices·bptt) → (n_slices·batch_size, bptt)
        return s.reshape(batch_size, n_slices, bptt).transpose(1, 0, 2).reshape(-1, bptt)

    span = n_slices * bptt
    return rows(streams[:, :span]), rows(streams[:, 1:span + 1])


def read_text_file(path: str | os.PathLike) -> str:
    """The text of the UTF-8 file ``path`` (a leading byte-order mark dropped, nothing else changed); a missing
    or non-UTF-8 file is a :class:`~jaxlearn.data.DataFileError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"missing data file {path}: expected a UTF-8 text file")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataFileError(f"corrupt data file {path}: not UTF-8 (byte {raw[e.start:e.start + 1]!r} at offset "
                            f"{e.start:,}); save it as UTF-8 text") from e


def min_chars(kind: str, batch_size: int, bptt: int) -> tuple[int, int]:
    """The fewest characters the training and the validation part need for one batch of ``kind``.

    ``'stateful'``: ``batch_size·(bptt + 1)`` each (every stream one ``bptt`` slice and its targets);
    ``'overlapping'``: ``bptt + batch_size`` for training; ``'windows'``, ``'sequences'``: ``bptt·batch_size + 1``
    for training; validation batches may be smaller, so one window and its target: ``bptt + 1``.
    """
    if kind == "stateful":
        return batch_size * (bptt + 1), batch_size * (bptt + 1)
    return (bptt + batch_size if kind == "overlapping" else bptt * batch_size + 1), bptt + 1


def text_loaders(path: str | os.PathLike | None = None, kind: str = "stateful", batch_size: int = 64, bptt: int = 8,
                 valid_pct: float = VALID_PCT, min_freq: int = 1, lower: bool = False, seed: int = 0,
                 valid_batch_size: int | None = None, text: str | None = None,
                 vocab: CharVocab | None = None, split: str = "end") -> DataLoaders:
    """Character-level DataLoaders of int32 ids from any UTF-8 text: the file ``path``, or ``text``.

    Lesson 7's recipe: train = the first ``1 - valid_pct`` of the characters, validation = the rest
    (:func:`split_ids`); the vocabulary is built on the training part (:meth:`CharVocab.from_text` with
    ``lower`` and ``min_freq``) with an unknown token, which takes the characters seen fewer than ``min_freq``
    times and those met only in validation. ``dls.info`` holds ``vocab`` (:class:`CharVocab`), ``kind`` and
    ``bptt``. A missing, empty or non-UTF-8 file, or a text too short for one batch (:func:`min_chars`), is a
    :class:`~jaxlearn.data.DataFileError` saying so.

    Args:
        path: a UTF-8 text file (give ``path`` or ``text``, not both).
        kind: the batching of the lessons' models, one of :data:`KINDS` (see :func:`nietzsche_loaders`).
        batch_size: sequences per training batch (``'stateful'``: parallel streams, validation too).
        bptt: the window / sequence length in characters.
        valid_pct: the share of the text, at its end, for validation.
        min_freq: characters seen fewer times in the training part become the unknown token.
        lower: lowercase the text first.
        seed: the training set's shuffle seed (the window kinds; ``'stateful'`` keeps the order).
        valid_batch_size: validation batch size of the window kinds (default ``2·batch_size``).
        text: the text itself, instead of ``path``.
        vocab: a given :class:`CharVocab` instead of one built on the training part (a trained model's, or
            lesson 6's built on the whole text).
        split: ``'end'``: validation = the last ``valid_pct`` of the text; ``'random'`` (the window kinds):
            lesson 6's random ``valid_pct`` of the examples built from the whole text (:func:`random_split`),
            the vocabulary built on the whole text.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(map(repr, KINDS))}")
    if (path is None) == (text is None):
        raise ValueError("text_loaders: pass either a file's path or text=..., "
                         + ("not both" if text is not None else "got neither"))
    if not 0.0 < valid_pct < 1.0:
        raise ValueError(f"valid_pct must be in (0, 1), got {valid_pct}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(map(repr, SPLITS))}")
    if split == "random" and kind == "stateful":
        raise ValueError("split='random' draws examples at random, so it cannot keep the streams of kind "
                         "'stateful' continuous: use split='end'")
    source = "the text" if path is None else f"data file {path}"
    text = read_text_file(path) if text is None else text
    if not text:
        raise DataFileError(f"{source} is empty: expected some UTF-8 text")
    train_text, valid_text = split_ids(text, valid_pct)
    need_train, need_valid = min_chars(kind, batch_size, bptt)
    if len(train_text) < need_train or len(valid_text) < need_valid:
        raise DataFileError(
            f"{source} is too short for kind {kind!r} with batch_size {batch_size} and bptt {bptt}: its "
            f"{len(text):,} characters split into {len(train_text):,} for training and {len(valid_text):,} for "
            f"validation (valid_pct {valid_pct}), which need at least {need_train:,} and {need_valid:,}; use a "
            f"longer text or a smaller batch_size / bptt")
    if vocab is None:
        try:
            vocab = CharVocab.from_text(text if split == "random" else train_text, lower=lower, min_freq=min_freq,
                                        unk=True)
        except ValueError as e:
            raise DataFileError(f"{source}: {e}") from e
    train_ids, valid_ids = vocab.encode(train_text), vocab.encode(valid_text)
    if kind == "stateful":
        train = ArrayDataset(*stream_batches(train_ids, batch_size, bptt), batch_size, shuffle=False,
                             drop_last=True, seed=seed, transform=identity)
        valid = ArrayDataset(*stream_batches(valid_ids, batch_size, bptt), batch_size, shuffle=False,
                             drop_last=True, transform=identity)
    else:
        build = {"windows": lambda ids: char_windows(ids, bptt),
                 "overlapping": lambda ids: char_windows(ids, bptt, step=1),
                 "sequences": lambda ids: char_sequences(ids, bptt)}[kind]
        if split == "random":
            x, y = build(vocab.encode(text))
            train_idx, valid_idx = random_split(len(x), valid_pct)
            (x_train, y_train), (x_valid, y_valid) = (x[train_idx], y[train_idx]), (x[valid_idx], y[valid_idx])
        else:
            (x_train, y_train), (x_valid, y_valid) = build(train_ids), build(valid_ids)
        train = ArrayDataset(x_train, y_train, batch_size, shuffle=True, seed=seed, transform=identity)
        valid = ArrayDataset(x_valid, y_valid, min(valid_batch_size or 2 * batch_size, len(x_valid)),
                             transform=identity)
    return DataLoaders(train, valid, info={"vocab": vocab, "kind": kind, "bptt": bptt})


def nietzsche_loaders(kind: str = "stateful", batch_size: int = 64, bptt: int = 8,
                      path: str | os.PathLike | None = None, seed: int = 0,
                      valid_batch_size: int | None = None, vocab: str = "lesson6", split: str = "end"
                      ) -> DataLoaders:
    """The Nietzsche train / validation split as :class:`~jaxlearn.data.DataLoaders` of int32 ids: the checked
    lesson file (:func:`load_nietzsche`) through :func:`text_loaders`.

    ``kind`` (``bptt`` is the window length of the window kinds):

    * ``'windows'``: :func:`char_windows` ``(ids, bptt)``, non-overlapping (Char3Model: ``bptt=3``);
    * ``'overlapping'``: :func:`char_windows` ``(ids, bptt, step=1)`` (CharLoopModel, CharRnn);
    * ``'sequences'``: :func:`char_sequences` (CharSeqRnn);
    * ``'stateful'``: :func:`stream_batches` for both splits, ``shuffle=False`` and ``drop_last=True`` so that
      every batch continues the previous one stream by stream (StatefulCharRnn). The validation set uses
      the same ``batch_size`` (the carried state has one row per stream).

    The other kinds shuffle the training set (``seed``); validation batches are ``valid_batch_size``
    (default ``2·batch_size``). Ids are not scaled (``transform`` is the identity). ``vocab`` picks the
    vocabulary (:func:`nietzsche_splits`: ``'lesson6'``, 85 tokens, or ``'lesson7'``, 56, lowercased).
    ``dls.info`` holds ``vocab`` (:class:`CharVocab`), ``kind`` and ``bptt``. ``path``: as
    :func:`load_nietzsche`'s. ``split``: ``'end'`` (lesson 7's last 20% of the text) or ``'random'`` (lesson
    6's random 20% of the examples, :func:`random_split`; the window kinds only).
    """
    if vocab not in VOCABS:
        raise ValueError(f"unknown vocab {vocab!r}: expected one of {', '.join(map(repr, VOCABS))}")
    text = load_nietzsche(path)
    if vocab == "lesson7":  # CharVocab.lesson7: built on the training part, as text_loaders builds one
        return text_loaders(None, kind, batch_size, bptt, VALID_PCT, LESSON7_MIN_FREQ, lower=True, seed=seed,
                            valid_batch_size=valid_batch_size, text=text, split=split)
    return text_loaders(None, kind, batch_size, bptt, VALID_PCT, seed=seed, valid_batch_size=valid_batch_size,
                        text=text, vocab=CharVocab.from_text(text), split=split)
