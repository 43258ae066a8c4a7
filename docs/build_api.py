"""Build the API reference (``make docs``): ``python docs/build_api.py [out_dir] [--no-source]``, by default into
``docs/api``; ``--no-source`` leaves out each object's source (twice as fast: the test suite's build).

pdoc with two adjustments for how jaxlearn exports its names, made in this process only:

* ``jaxlearn`` and ``jaxlearn.callbacks`` hand on their everyday names lazily (PEP 562, :mod:`jaxlearn._lazy`);
  pdoc reads a package's names from its ``__dict__``, so they are resolved first;
* a package's ``__all__`` lists the names it hands on, and pdoc would document only the submodules listed
  there (none), so each package's public submodules are appended to it.

The docstrings are reST roles (``:func:`~jaxlearn.x.y```) with Google-style ``Args:`` blocks: pdoc's
``google`` format reads both; the ``~`` (Sphinx: show the last part only) is dropped, so pdoc shows and links the
whole dotted name, and a literal block's ``::`` is shown as Sphinx shows it (``text::`` as ``text:``).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sys
import warnings
from pathlib import Path

import pdoc
import pdoc.docstrings
import pdoc.render

PACKAGE = "jaxlearn"
# pdoc cannot evaluate some annotations written by other libraries (flax's initializer types, optax.OptState's
# ArrayTree, a NamedTuple's postponed field types); it then shows them as written, which is all a reader needs.
TOLERATED = re.compile(r"Error parsing type annotation")
_pdoc_rst = pdoc.docstrings.rst


def rst(contents: str, source_file: Path | None) -> str:
    """pdoc's reST conversion, with ``:role:`~a.b``` read as ``:role:`a.b``` and ``text::`` ending a line shown
    as ``text:`` (a ``::`` alone on its line: not at all)."""
    contents = re.sub(r"(:[a-z]+:`)~", r"\1", contents)
    contents = re.sub(r"^[ \t]*::[ \t]*$", "", re.sub(r"(\S)::[ \t]*$", r"\1:", contents, flags=re.M), flags=re.M)
    return _pdoc_rst(contents, source_file)


def public_modules(package: str = PACKAGE) -> list[str]:
    """The package and every submodule whose dotted name has no part starting with ``_``."""
    root = importlib.import_module(package)
    names = [package] + [m.name for m in pkgutil.walk_packages(root.__path__, f"{package}.")]
    return [n for n in names if not any(part.startswith("_") for part in n.split("."))]


def prepare_packages(modules: list[str]) -> None:
    """Resolve the lazy names and list each package's public submodules in its ``__all__``."""
    for name in modules:
        module = importlib.import_module(name)
        if not hasattr(module, "__path__") or not hasattr(module, "__all__"):
            continue
        for export in module.__all__:
            vars(module).setdefault(export, getattr(module, export))
        children = [m.rpartition(".")[2] for m in modules if m.rpartition(".")[0] == name]
        module.__all__ = [*module.__all__, *(c for c in children if c not in module.__all__)]


def build(out_dir: Path, show_source: bool = True) -> list[str]:
    """Write the reference to ``out_dir`` (with each object's source unless ``show_source=False``); return
    pdoc's warnings (the build is clean when there are none)."""
    modules = public_modules()
    prepare_packages(modules)
    pdoc.docstrings.rst = rst
    pdoc.render.configure(docformat="google", search=True, show_source=show_source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(PACKAGE, output_directory=Path(out_dir))
    return [f"{w.category.__name__}: {w.message}" for w in caught if not TOLERATED.match(str(w.message))]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=Path(__file__).resolve().parent / "api")
    parser.add_argument("--no-source", action="store_true", help="leave out each object's source")
    args = parser.parse_args(argv[1:])
    out_dir = args.out_dir
    problems = build(out_dir, show_source=not args.no_source)
    for problem in problems:
        print(f"pdoc: {problem}", file=sys.stderr)
    print(f"API reference: {out_dir / 'index.html'}" + (f" ({len(problems)} warnings)" if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
