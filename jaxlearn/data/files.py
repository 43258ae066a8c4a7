"""Where datasets come from: the cache folder, downloads that fail in seconds naming the way to work offline, and
the error every loader raises for a bad file."""

from __future__ import annotations

import http.client
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

CACHE_ENV = "JAXLEARN_CACHE_DIR"
"""The environment variable naming the cache folder (:func:`cache_dir`)."""

DOWNLOAD_TIMEOUT_S = 20.0
"""Seconds a download waits for an answer (to connect, or for its next bytes) before it gives up: an offline
machine, or a proxy that never answers, fails in seconds instead of hanging."""

_CONNECT_TIMEOUT_S = 3.0  # the first, TCP-only check of require_download_host: an unreachable host fails at once


class DataFileError(ValueError):
    """A data file is missing, unreadable or not what it should be; the message names the file."""


def cache_dir() -> Path:
    """Where downloads and the prepared tfds data go: ``$JAXLEARN_CACHE_DIR`` or ``~/.cache/jaxlearn``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "jaxlearn"))


def one_line(e: BaseException) -> str:
    """The exception ``e`` as one line for an error message: its type and text, whitespace collapsed, cut at 300
    characters."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def _why_not(e: BaseException, timeout_s: float) -> str:
    """Why a request failed, for an error message: a timeout said as such (urllib wraps it in a URLError)."""
    if isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None), TimeoutError):
        return f"no answer within {timeout_s:g} s"
    return one_line(e)


def download(url: str, dest: str | os.PathLike, offline_hint: str, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Fetch ``url`` into the file ``dest``, through ``dest.part``: the real name appears only once the file is
    complete, and a failed download leaves nothing behind. No network, an error status, or no answer within
    ``timeout_s`` seconds (through a proxy too) raises :class:`DataFileError` naming the URL, then
    ``offline_hint``, which says what to set instead (``"set JAXLEARN_NAMES_PATH to a local names.txt"``)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            part.write_bytes(response.read())
    except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError and timeouts are OSErrors
        part.unlink(missing_ok=True)
        raise DataFileError(f"could not download {url} to {dest} ({_why_not(e, timeout_s)}); offline, "
                            f"{offline_hint}") from e
    part.replace(dest)
    return dest


def require_download_host(url: str, what: str, offline_hint: str, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Fail in seconds, with :class:`DataFileError` naming ``what`` is downloaded, the host and
    ``offline_hint``, unless ``url``'s host answers: for downloads made by another library (tfds), which retries
    for minutes and then raises an error that names no way out. The host (or the proxy that reaches it) must
    accept a connection within 3 s, and ``url`` then answer a HEAD request within ``timeout_s`` (any HTTP
    status will do): a proxy may accept connections and never answer."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    proxied = bool(proxy) and not urllib.request.proxy_bypass(parts.hostname)
    target = urllib.parse.urlsplit(proxy) if proxied else parts
    address = (target.hostname, target.port or (443 if target.scheme == "https" else 80))
    host = f"{'the proxy ' if proxied else ''}{address[0]}:{address[1]}"
    try:
        socket.create_connection(address, timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise DataFileError(f"cannot download {what}: {host} is unreachable ({e}) on the way to {url}. Offline, "
                            f"{offline_hint}") from e
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s).close()
    except urllib.error.HTTPError:
        pass  # an answer, if not a welcome one (a 403 or 405 to HEAD): the way to the host works
    except (OSError, http.client.HTTPException) as e:
        raise DataFileError(f"cannot download {what}: {url} did not answer{' through ' + host if proxied else ''} "
                            f"({_why_not(e, timeout_s)}). Offline, {offline_hint}") from e


def quiet_tensorflow() -> None:
    """Call before TensorFlow's first import (tfds imports it), so that it prints nothing: its oneDNN banner
    comes before its logging is set up (so the log level cannot hide it) and only while oneDNN's ops, which
    tfds' decoding never needs, are on; log level 1 hides its other INFO lines. A user's own settings win."""
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
