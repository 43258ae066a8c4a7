"""What keeps a checkpoint folder whole while a run writes it: one writer at a time (a lock file naming the
holder's host and PID), signals held back while a checkpoint is written, SIGTERM turned into a stop that saves
first, and a failed write reported once, in one line, instead of as orbax's tracebacks.

A preempted machine, ``kill`` and ``docker stop`` send SIGTERM, whose default kills the process at once: during a
fit :class:`~jaxlearn.callbacks.checkpoint.CheckpointCB` turns it into :class:`Terminated`, which ends the fit like a
Ctrl-C does (the last finished epoch is saved, a write in progress finishes) and exits with status 143.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import json
import logging
import os
import signal
import socket
import threading
import time
import warnings
from pathlib import Path

from jaxlearn.callbacks.checkpoint_files import CheckpointError, short_error

LOCK_NAME = "jaxlearn.lock"
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_locked_here: set[Path] = set()  # lock files this process holds


class Terminated(SystemExit):
    """SIGTERM (a preempted machine, ``kill``, ``docker stop``) arrived during a fit, which stopped after saving its
    last finished epoch. Left uncaught it exits the process with status 143 (128 + SIGTERM), as the signal would."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)

    def __str__(self) -> str:
        return "SIGTERM: the fit was stopped"


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def stop_on_sigterm() -> object | None:
    """During a fit, SIGTERM raises :class:`Terminated` (where it would kill the process: a handler of the
    user's own stays). Returns the handler to put back with :func:`restore_sigterm`, or None if none was set."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return None
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except (ValueError, OSError):  # no signals here (an embedded interpreter)
        return None


def restore_sigterm(previous: object | None) -> None:
    """Put back the SIGTERM handler :func:`stop_on_sigterm` returned (None: nothing to do), unless someone has set
    another since."""
    if previous is not None and signal.getsignal(signal.SIGTERM) is _raise_terminated:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_deferred():
    """Hold Ctrl-C and SIGTERM back until the block is done (a checkpoint write is not cut in half), then act on
    them as their handlers would have."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous: dict[int, object] = {}
    try:
        for signum in HELD_SIGNALS:
            previous[signum] = signal.signal(signum, lambda signum, frame: received.append(signum))
    except (ValueError, OSError):  # no signals here (an embedded interpreter)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for signum in dict.fromkeys(received):
        handler = previous[signum]
        if callable(handler):
            handler(signum, None)  # Python's SIGINT handler raises KeyboardInterrupt, a fit's SIGTERM Terminated
        elif handler == signal.SIG_DFL and signum == signal.SIGINT:
            raise KeyboardInterrupt
        elif handler == signal.SIG_DFL:
            signal.raise_signal(signum)  # the default action, now that the write is done


# --------------------------------------------------------------------------------------------- the lock

def checked_directory(directory: Path) -> Path:
    """``directory``, created if needed; a path that is a file, or that cannot be created, is named with why."""
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} is a file, not a directory: choose another path")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create the checkpoint directory {directory}: {short_error(e)}") from e
    return directory


def _holder(lock: Path) -> dict | None:
    """The run named in a lock file (``host``, ``pid``, ``since``); None without a readable one."""
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and {"host", "pid"} <= holder.keys() else None


def _alive(holder: dict) -> bool:
    """Whether the lock's holder may still be running: on another host there is no telling; here, its PID."""
    if holder["host"] != socket.gethostname():
        return True
    if holder["pid"] == os.getpid():
        return False  # this process does not hold it (that is checked first): an earlier process with our PID
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


@contextlib.contextmanager
def _one_at_a_time(directory: Path):
    """Locking is one step among the processes of this host (an advisory lock on the folder itself)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # a file system without flock: the rename below is still atomic
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def lock_directory(directory: Path) -> Path:
    """Take ``directory``'s lock for this process: a lock file naming this host and PID. Returns its path.

    Refused with :class:`CheckpointError` naming the holder while another run holds it: one on another host, or
    whose PID is running on this one. A lock left by a run that died (its PID gone) is taken over."""
    checked_directory(directory)
    lock = directory / LOCK_NAME
    if lock in _locked_here:
        raise CheckpointError(f"checkpoint directory {directory} is already being written by this process "
                              f"(another fit or CheckpointCB holds its lock {lock}): one writer per directory")
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    with _one_at_a_time(directory):
        holder = _holder(lock)
        if holder is not None and _alive(holder):
            here = holder["host"] == me["host"]
            raise CheckpointError(
                f"checkpoint directory {directory} is in use by another run: host {holder['host']}, PID "
                f"{holder['pid']} holds its lock {lock} (since {holder.get('since', '?')}). Two runs writing one "
                f"directory delete each other's checkpoints: wait for that run to end, stop it, or choose another "
                f"directory" + ("" if here else f"; if that run is gone, delete {lock}"))
        written = lock.with_name(f"{LOCK_NAME}.{me['host']}.{me['pid']}")
        written.write_text(json.dumps(me))
        os.replace(written, lock)  # whole or not at all: another process never reads half a lock
    _locked_here.add(lock)
    return lock


def unlock_directory(lock: Path) -> None:
    """Let the lock go (only if it still names this process)."""
    _locked_here.discard(lock)
    holder = _holder(lock)
    if holder is not None and (holder["host"], holder["pid"]) == (socket.gethostname(), os.getpid()):
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


# ------------------------------------------------------------------------------------------ failed writes

def write_error(directory: Path, step: int, error: BaseException, written: list[int]) -> CheckpointError:
    """One error naming the checkpoint that could not be written, why, and the checkpoints still there."""
    causes = [error]
    while causes[-1].__cause__ is not None or causes[-1].__context__ is not None:
        causes.append(causes[-1].__cause__ or causes[-1].__context__)
    full = any(getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in str(e) for e in causes)
    why = f"the disk is full (no space left on the device holding {directory})" if full else short_error(error)
    earlier = f"the checkpoints written before are intact: {written}" if written else "no checkpoint was written"
    return CheckpointError(f"could not write checkpoint {step} to {directory / str(step)}: {why}. Training "
                           f"stopped there; {earlier}")


class HeldOrbaxErrors(logging.Filter):
    """Keeps orbax's error logs (a traceback from each of its threads, per failed write) off stderr while a fit
    checkpoints: a failed write is reported once, by :func:`write_error`. ``release`` lets them through after all
    (when no error was raised for them) and collects the coroutines the failed write left unawaited; after a
    reported failure it stays, since that write's threads go on logging errors until the process ends."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] | None = []  # None once released: dropped, not kept
        self.logger = logging.getLogger("absl")  # orbax logs through absl's logger
        self.logger.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        """False (held back) for an orbax error record, kept until :meth:`release` (dropped after it); True for
        any other record."""
        if record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname:
            if self.records is not None:
                self.records.append(record)
            return False
        return True

    def release(self, reported: bool) -> None:
        """``reported`` False: stop filtering and log the held records after all. True (a :func:`write_error` was
        raised): keep dropping orbax's errors and collect the failed write's unawaited coroutines quietly."""
        if not reported:
            self.logger.removeFilter(self)
            for record in self.records:
                self.logger.handle(record)
        else:  # stays: the failed write's threads still log their timeouts later, at exit (raised already)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
                gc.collect()
        self.records = None
