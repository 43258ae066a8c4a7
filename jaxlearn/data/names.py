"""makemore's names (Karpathy, makemore part 3): the file, the character vocabulary, context windows and the
lecture's 80/10/10 split, as arrays or :class:`~jaxlearn.data.DataLoaders`."""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxlearn.data.arrays import DataLoaders
from jaxlearn.data.files import DataFileError, cache_dir, download


NAMES_ENV = "JAXLEARN_NAMES_PATH"
"""The environment variable giving the path of ``names.txt`` (:func:`load_names`)."""

NAMES_URL = "https://raw.githubusercontent.com/karpathy/makemore/master/names.txt"
"""Where :func:`load_names` downloads ``names.txt`` from when no path is given."""


def load_names(path: str | os.PathLike | None = None) -> list[str]:
    """makemore's 32,033 names: from ``path``, ``$JAXLEARN_NAMES_PATH``, or downloaded once to the cache (a
    machine that cannot reach :data:`NAMES_URL` fails in seconds, naming the variable to set)."""
    path = path or os.environ.get(NAMES_ENV)
    if path is None:
        path = cache_dir() / "names.txt"
        if not path.is_file():
            download(NAMES_URL, path, f"set {NAMES_ENV} to a local copy of makemore's names.txt")
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"missing data file {path}: expected makemore's names.txt (one name per line); "
                            f"set {NAMES_ENV} to its path")
    try:
        words = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as e:
        raise DataFileError(f"corrupt data file {path}: not readable as UTF-8 text ({e}); expected makemore's "
                            f"names.txt, lowercase a-z names one per line") from e
    bad = next((w for w in words if not w.isascii() or not w.isalpha() or not w.islower()), None)
    if not words or bad is not None:
        raise DataFileError(f"corrupt data file {path}: expected lowercase a-z names one per line, "
                            f"found {bad!r}" if words else f"corrupt data file {path}: it holds no names")
    return words


@dataclass(frozen=True)
class Vocab:
    """Characters ↔ integers; '.' (0) marks both the start and the end of a name. ``itos``: the character of
    each index."""
    itos: tuple[str, ...]

    @classmethod
    def from_words(cls, words: Sequence[str]) -> "Vocab":
        """The vocabulary of ``words``: '.' then their characters in sorted order (makemore's ``stoi``)."""
        return cls((".",) + tuple(sorted(set("".join(words)))))

    @property
    def stoi(self) -> dict[str, int]:
        """``{character: index}``, the inverse of ``itos``."""
        return {s: i for i, s in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, word: str) -> list[int]:
        """The indices of the characters of ``word`` (no '.' added)."""
        stoi = self.stoi
        return [stoi[c] for c in word]

    def decode(self, ids: Sequence[int]) -> str:
        """The characters of the indices ``ids``, joined."""
        return "".join(self.itos[i] for i in ids)


def context_windows(words: Sequence[str], vocab: Vocab, block_size: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Every (previous ``block_size`` characters → next character) pair of ``words``, left-padded with '.'
    (makemore), as ``(x (N, block_size), y (N,))`` int32 indices of ``vocab``."""
    xs, ys = [], []
    stoi = vocab.stoi
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            ix = stoi[ch]
            xs.append(context)
            ys.append(ix)
            context = context[1:] + [ix]
    return np.array(xs, dtype=np.int32).reshape(-1, block_size), np.array(ys, dtype=np.int32)


def names_splits(words: Sequence[str], block_size: int = 3, seed: int = 42
                 ) -> tuple[Vocab, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The lecture's split: ``random.seed(42); random.shuffle(words)`` (``seed``), then 80% / 10% / 10% of the
    words as :func:`context_windows` of ``block_size`` characters; returns the vocabulary and the three splits.

    With the 32,033 names and block_size 3 this gives 182,625 / 22,655 / 22,866 examples.
    """
    vocab = Vocab.from_words(words)
    words = list(words)
    random.Random(seed).shuffle(words)  # same sequence as the lecture's global random.seed(42)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    parts = {"train": words[:n1], "valid": words[n1:n2], "test": words[n2:]}
    return vocab, {k: context_windows(v, vocab, block_size) for k, v in parts.items()}


def names_loaders(batch_size: int = 32, seed: int = 0, block_size: int = 3, path=None,
                  split_seed: int = 42, batches_per_epoch: int | None = None) -> DataLoaders:
    """makemore's names as :class:`DataLoaders`: the lecture's train / valid split of context windows.

    ``dls.info`` holds ``vocab``, ``block_size`` and the ``test`` split (x, y).

    Args:
        batch_size: training examples per batch (the lecture's 32).
        seed: the training set's shuffle seed.
        block_size: characters of context per example.
        path: ``names.txt`` (default: ``$JAXLEARN_NAMES_PATH``, or downloaded once; :func:`load_names`).
        split_seed: the seed of the 80/10/10 split (:func:`names_splits`; the lecture's 42).
        batches_per_epoch: draw that many training batches with replacement per epoch (the lecture's
            ``torch.randint`` minibatches) instead of shuffled passes.
    """
    vocab, splits = names_splits(load_names(path), block_size=block_size, seed=split_seed)
    dls = DataLoaders.from_arrays(splits["train"], splits["valid"], batch_size, seed=seed)
    if batches_per_epoch is not None:
        dls.train = dataclasses.replace(dls.train, batches_per_epoch=batches_per_epoch)
    dls.info.update(vocab=vocab, block_size=block_size, test=splits["test"])
    return dls

