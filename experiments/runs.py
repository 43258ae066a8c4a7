"""What every experiment script (``experiments/*.py``) shares (the scripts import it as ``runs``): one
command line, an output folder proven writable before any training, strict JSON files, and a loud stop when
training diverges.

    parser = experiment_parser("fashion_mnist", __doc__, epochs=3, bs=256, lr=0.2, seed=0,
                               quick={"epochs": 1, "n_train": 1024})
    parser.add_argument("--n-train", type=positive_int, default=None, help="train on the first N images")

    @exit_on_run_error
    def main(argv=None):
        args = parser.parse_args(argv)
        prepare_run(args)                      # before any data is loaded; clears the old results.json
        ...                                    # learn.fit(...)
        check_history(metrics.history, hint=lower_lr_hint(args.lr))
        write_json(args.out / "results.json", results)

Results go to ``runs/<name>/`` (``--out DIR`` elsewhere); the published ones in ``docs/<name>/`` change only
with ``--docs``, never with ``--quick``. A run starts by clearing the folder's old ``results.json`` (and
``health.json``), so that a run that fails leaves no results of an earlier one beside its own figures; every
JSON file is written to a temporary file and renamed, so none is ever half written. Numeric flags are checked
as they are parsed (``--epochs 0``, ``--seed -1`` end at once, naming the flag).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np

# strict JSON belongs to the library's file writers (the metric loggers use it too); the scripts reach it here
from jaxlearn.callbacks.loggers import NON_FINITE_KEY, strict_dumps, write_json
from jaxlearn.checks import MAX_SEED, check_seed

__all__ = ["experiment_parser", "ExperimentParser", "prepare_out", "prepare_run", "disable_progress_bars",
           "write_json", "strict_dumps", "check_finite", "check_history", "lower_lr_hint", "exit_on_run_error",
           "RunError", "DivergedError", "OutputDirError", "RUNS_DIR", "DOCS_DIR", "NON_FINITE_KEY", "diagnose",
           "RESULT_FILES", "clear_old_results", "positive_int", "non_negative_int", "positive_float",
           "non_negative_float", "fraction", "seed", "positive_int_list"]

RUNS_DIR = Path("runs")  # every run's default home (git-ignored)
DOCS_DIR = Path("docs")  # the published results: written only with --docs

RESULT_FILES = ("results.json", "health.json")  # what a run's success writes: cleared when a run starts


class RunError(RuntimeError):
    """A run that cannot go on; the message says what happened and what to change."""


class DivergedError(RunError):
    """The training loss became NaN or infinite: nothing after it (accuracy, results) means anything."""


class OutputDirError(RunError):
    """The output folder cannot be created or written to."""


# ------------------------------------------------------------------------------------------ flag values
# argparse ``type=`` functions: a bad value ends the parse at once with ``argument --flag: <why>``, before any
# import of data or compiling (not an OverflowError or a ZeroDivisionError minutes later).

def _parsed(text: str, kind: Callable[[str], Any], expected: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer of 1 or more: epochs, a batch size, steps, a number of images."""
    value = _parsed(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (1 or more), got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer of 0 or more: pixels of padding, extra views."""
    value = _parsed(text, int, "an integer of 0 or more")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer of 0 or more, got {value}")
    return value


def _finite_float(text: str, expected: str) -> float:
    value = _parsed(text, float, expected)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0: a learning rate."""
    value = _finite_float(text, "a positive number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value:g}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number of 0 or more: a weight decay."""
    value = _finite_float(text, "a number of 0 or more")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of 0 or more, got {value:g}")
    return value


def fraction(text: str) -> float:
    """A number strictly between 0 and 1: the warm-up share of a one-cycle schedule."""
    value = _finite_float(text, "a number between 0 and 1")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (both excluded), got {value:g}")
    return value


def seed(text: str) -> int:
    """A seed of ``jax.random.key``: an integer in 0..2**32-1 (:func:`jaxlearn.checks.check_seed`)."""
    value = _parsed(text, int, f"an integer in 0..{MAX_SEED}")
    try:
        check_seed(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def positive_int_list(text: str) -> str:
    """Comma-separated positive integers, e.g. channels ``16,32,64``; returned as text, spaces dropped
    (``'8, 16'`` → ``'8,16'``), for the scripts that record it as given."""
    values = [_parsed(part, int, "comma-separated positive integers, e.g. 16,32,64") for part in text.split(",")]
    if not all(v >= 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, e.g. 16,32,64, got {text!r}")
    return ",".join(map(str, values))


# The numeric flags every experiment has: type and generic help (an experiment may say more, see ``helps``).
COMMON_NUMBERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "epochs": (positive_int, "epochs of training"),
    "bs": (positive_int, "batch size"),
    "lr": (positive_float, "learning rate (the peak, under a schedule)"),
    "seed": (seed, "random seed (init, shuffles, dropout)"),
}


# ---------------------------------------------------------------------------------------- command line

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in --help, the description as written. Not shown: False (a switch's) and None, which means
    'the experiment's own settings', said in the flag's help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _NotApplicable(argparse.Action):
    """A common flag that means nothing to this experiment: listed in --help, refused when given."""

    def __init__(self, option_strings, dest, why: str, **kwargs):
        super().__init__(option_strings, dest, nargs="?", default=argparse.SUPPRESS, help=f"not used: {why}",
                         **kwargs)
        self.why = why

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} does not apply to {parser.prog}: {self.why}")


class ExperimentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose ``parse_args`` also applies ``--quick`` (its settings become the
    defaults, so flags given explicitly still win), refuses ``--docs`` with ``--quick`` and ``--out`` into
    the published ``docs/``, resolves ``args.out`` (``docs/<name>`` under ``--docs``) and sets
    ``args.keep_results`` (for :func:`prepare_run`)."""

    def __init__(self, name: str, quick: Mapping[str, Any], keep_results: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.name, self.quick, self.keep_results = name, dict(quick), keep_results

    def parse_args(self, args: Sequence[str] | None = None,
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        ns = super().parse_args(args, namespace)
        if ns.quick:
            if ns.docs:
                self.error("--docs publishes results to docs/: a --quick run cannot (drop one of them)")
            # argparse leaves attributes already on the namespace alone unless their flag is given
            given = vars(namespace) if namespace is not None else {}
            ns = super().parse_args(args, argparse.Namespace(**{**self.quick, **given}))
        if ns.docs:
            ns.out = DOCS_DIR / self.name
        elif _inside(ns.out, DOCS_DIR):
            self.error(f"--out {ns.out} is inside {DOCS_DIR}/, the published results: use --docs to update them")
        ns.keep_results = self.keep_results
        return ns


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _as_flags(settings: Mapping[str, Any]) -> str:
    """``{'epochs': 1, 'skip_deep': True, 'rungs': ['a', 'b']}`` → ``--epochs 1 --skip-deep --rungs a b``."""
    parts = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            parts.append(" ".join([flag, *map(str, value)]))
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def experiment_parser(name: str, description: str | None, *, quick: Mapping[str, Any] | None = None,
                      helps: Mapping[str, str] | None = None, not_applicable: Mapping[str, str] | None = None,
                      keep_results: bool = False, **defaults: Any) -> ExperimentParser:
    """The command line every experiment shares; the experiment adds its own flags to what this returns.

    ``--epochs --bs --lr --seed`` take their defaults from ``defaults`` (None: the experiment's own settings,
    which ``helps[flag]`` should describe); a flag in ``not_applicable`` (flag → why) is listed but refused.
    Every one of the four must be in one of the two. ``--out`` defaults to ``runs/<name>``; ``--docs`` writes
    to ``docs/<name>`` instead; ``--quick`` applies ``quick`` (``{dest: value}``, e.g. ``{"epochs": 1}``)
    for a smoke run of under a minute (an experiment that reads ``args.quick`` itself says what it does in
    ``helps["quick"]``); ``--no-progress`` is for :func:`prepare_run`, ``--debug`` for
    :func:`exit_on_run_error`. The four numbers are checked as they are parsed (:func:`positive_int`,
    :func:`positive_float`, :func:`seed`). ``keep_results``: the experiment adds its rows to the
    ``results.json`` already in the folder (a ladder run rung by rung), so :func:`prepare_run` keeps it.
    """
    helps, not_applicable, quick = dict(helps or {}), dict(not_applicable or {}), dict(quick or {})
    unknown = (set(defaults) | set(not_applicable)) - set(COMMON_NUMBERS)
    missing = set(COMMON_NUMBERS) - set(defaults) - set(not_applicable)
    if unknown or missing:
        raise TypeError(f"experiment_parser({name!r}): give each of {sorted(COMMON_NUMBERS)} a default or a "
                        f"not_applicable reason (unknown: {sorted(unknown)}, missing: {sorted(missing)})")
    parser = ExperimentParser(name, quick, keep_results, prog=f"{name}.py", description=description,
                              formatter_class=_HelpFormatter)
    for flag, (kind, generic_help) in COMMON_NUMBERS.items():
        if flag in not_applicable:
            parser.add_argument(f"--{flag}", action=_NotApplicable, why=not_applicable[flag])
        else:
            parser.add_argument(f"--{flag}", type=kind, default=defaults[flag], help=helps.get(flag, generic_help))
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, default=RUNS_DIR / name,
                       help="folder for the results (created, and checked writable, before training)")
    where.add_argument("--docs", action="store_true",
                       help=f"write to {DOCS_DIR / name}/, the published results, instead of --out")
    quick_help = f"a smoke run of under a minute: {_as_flags(quick)} (flags given explicitly still win)"
    parser.add_argument("--quick", action="store_true", help=helps.get("quick", quick_help))
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    parser.add_argument("--diagnose", action="store_true",
                        help="before training, learn.diagnose(): the training-health report, printed and written to "
                             "health.json and the results")
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help="show the traceback of a run error or of bad input (a missing data file, ...) instead "
                             "of its one-line message")
    return parser


# ------------------------------------------------------------------------------------------ before a run

def prepare_out(path: str | os.PathLike) -> Path:
    """Create the output folder and prove it is writable (write and delete a probe file), raising
    :class:`OutputDirError` naming it otherwise: before any training, so that no run trains for an hour
    and then fails to save."""
    path = Path(path)
    probe = path / f".write-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputDirError(f"cannot write to the output folder {path}: {e.strerror or e}") from e
    return path


def disable_progress_bars() -> None:
    """Every tqdm bar made from now on (ProgressCB's, tfds's, child processes') starts disabled.

    tqdm reads ``TQDM_*`` variables when it is first imported; jaxlearn imports it only when a fit starts,
    but a library may have imported it already, so its default is then changed directly."""
    os.environ["TQDM_DISABLE"] = "1"
    if "tqdm" in sys.modules:
        import tqdm
        tqdm.tqdm.__init__ = functools.partialmethod(tqdm.tqdm.__init__, disable=True)


def clear_old_results(out: str | os.PathLike, keep: Sequence[str] = ()) -> list[Path]:
    """Delete the :data:`RESULT_FILES` of an earlier run in ``out`` (except those named in ``keep``); returns
    those deleted. A run that then fails (diverges, finds bad data) leaves no results.json, rather than the
    last run's numbers beside its own new figures; one that finishes writes its own."""
    removed = []
    for name in RESULT_FILES:
        path = Path(out) / name
        if name not in keep and path.is_file():
            try:
                path.unlink()
            except OSError as e:
                raise OutputDirError(f"cannot delete the earlier run's {path}: {e.strerror or e}") from e
            removed.append(path)
    return removed


def prepare_run(args: argparse.Namespace) -> Path:
    """What every experiment does first, before loading data: the output folder (:func:`prepare_out`), cleared
    of an earlier run's results (:func:`clear_old_results`; all kept for an experiment whose parser has
    ``keep_results``) and ``--no-progress``. Returns the output folder."""
    out = prepare_out(args.out)
    clear_old_results(out, keep=RESULT_FILES if getattr(args, "keep_results", False) else ())
    if args.no_progress:
        disable_progress_bars()
    return out


# --------------------------------------------------------------------------------------------- health

def diagnose(learn: Any, args: argparse.Namespace, name: str = "model") -> dict | None:
    """With ``--diagnose``: ``learn.diagnose()`` (a short trial, the Learner put back exactly) printed, added to
    ``<out>/health.json`` under ``name`` and returned as a dict for the results; without it, None."""
    if not getattr(args, "diagnose", False):
        return None
    report = learn.diagnose()
    print(f"[{name}] {report}", flush=True)
    health = json.loads(report.to_json())
    path = Path(args.out) / "health.json"
    reports = json.loads(path.read_text()) if path.exists() else {}
    write_json(path, {**reports, name: health})
    return health


# ------------------------------------------------------------------------------------------- divergence

def lower_lr_hint(lr: float | None) -> str:
    """What to do about a diverged run, for :func:`check_finite`'s ``hint``."""
    return "lower the learning rate" + (f" (--lr {lr:g})" if lr is not None else "")


def check_finite(value: float | Sequence[float] | np.ndarray, what: str, at: str = "", hint: str = "") -> None:
    """Raise :class:`DivergedError` if ``value`` is NaN or infinite.

    ``value`` is a number (``at`` says where, e.g. ``"epoch 0"``) or per-step values (e.g. every training
    step's loss): then the first bad one is reported as ``step i`` (followed by ``at``).
    The message reads ``diverged: training loss is nan at epoch 0 — lower the learning rate (--lr 1e+09)``.
    """
    values = np.asarray(value, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size == 0:
        return
    where = ", ".join(filter(None, [f"step {bad[0]}" if values.ndim else "", at]))
    raise DivergedError(f"diverged: {what} is {values.ravel()[bad[0]]}" + (f" at {where}" if where else "")
                        + (f" — {hint}" if hint else ""))


def check_history(history: Sequence[Mapping[str, Any]], at: str = "", hint: str = "") -> None:
    """:func:`check_finite` on each epoch's training and validation loss of a fit (``MetricsCB.history``):
    the first non-finite one stops the run."""
    for row in history:
        for key, what in (("train_loss", "training loss"), ("valid_loss", "validation loss")):
            if key in row:
                check_finite(row[key], what, ", ".join(filter(None, [f"epoch {row.get('epoch', '?')}", at])), hint)


P = ParamSpec("P")
R = TypeVar("R")
DEBUG_FLAG = "--debug"


def exit_on_run_error(main: Callable[P, R]) -> Callable[P, R]:
    """Wrap an experiment's ``main(argv=None)``: a :class:`RunError` (divergence, unwritable output folder) or
    a ``ValueError`` from bad input (``jaxlearn.data.DataFileError``: a missing or corrupt data file, ...) ends
    the process with its message as one line on stderr and exit status 2, without a traceback (the message says
    what to change, the traceback only where the check was made). With ``--debug`` in ``argv`` (main's first
    argument, when a list; else the command line) the error propagates with its traceback."""

    @functools.wraps(main)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return main(*args, **kwargs)
        except (RunError, ValueError) as e:
            argv = kwargs.get("argv", args[0] if args else None)
            if DEBUG_FLAG in (argv if isinstance(argv, (list, tuple)) else sys.argv[1:]):
                raise
            message = " ".join(str(e).split())
            print(message if isinstance(e, RunError) else f"error: {message} ({DEBUG_FLAG} shows the traceback)",
                  file=sys.stderr)
            sys.exit(2)
    return wrapped
