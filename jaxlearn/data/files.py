"""Where datasets come from: the cache folder, and the error every loader raises for a bad file."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "JAXLEARN_CACHE_DIR"


class DataFileError(ValueError):
    """A data file is missing, unreadable or not what it should be; the message names the file."""


def cache_dir() -> Path:
    """Where downloads and the prepared tfds data go: ``$JAXLEARN_CACHE_DIR`` or ``~/.cache/jaxlearn``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "jaxlearn"))


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"

