"""The package's layers hold: every import runs down (or across) the layers, no module imports itself in a
circle, no module outgrows one idea, nothing is patched onto the Learner, and importing the core loads no
orbax, matplotlib or TensorFlow. Read from the source (the AST), so a lazy import inside a function counts."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jaxlearn"

# Lowest first. A module may import modules of its own layer or a lower one (the Learner sits above the
# callbacks: its shortcuts import them, and they see the Learner only through jaxlearn.callback's protocol).
LAYERS = [
    ("foundations", ["jaxlearn.checks", "jaxlearn.trees", "jaxlearn.train_flag", "jaxlearn.predictions", "jaxlearn.losses", "jaxlearn.metrics",
                     "jaxlearn.sharding", "jaxlearn.optim", "jaxlearn.nn", "jaxlearn.data"]),
    ("core", ["jaxlearn.step", "jaxlearn.callback"]),
    ("callbacks", ["jaxlearn.callbacks"]),
    ("learner", ["jaxlearn.learner", "jaxlearn.calls", "jaxlearn.prepare", "jaxlearn.export", "jaxlearn.interpret"]),
    ("lesson domains", ["jaxlearn.vision", "jaxlearn.text", "jaxlearn.collab", "jaxlearn.makemore"]),
]
PACKAGE_ITSELF = ["jaxlearn", "jaxlearn._lazy", "jaxlearn._moved"]  # the lazy name table: imports by name only
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_layout.py: place it")


def imports(module: str) -> set[str]:
    """The jaxlearn modules ``module`` imports (module- or function-level), resolved to files."""
    path = MODULES[module]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxlearn"):
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            target = next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in MODULES),
                          None)
            if target and target != module and not module.startswith(target + "."):
                found.add(target)
    return found


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        if module not in PACKAGE_ITSELF:
            layer_of(module)


def test_imports_run_down_the_layers():
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
              for m, targets in GRAPH.items() if m not in PACKAGE_ITSELF for t in targets
              if t not in PACKAGE_ITSELF and layer_of(t) > layer_of(m)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(m, path):
        state[m] = 1
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])


def test_callbacks_never_import_the_learner():
    """They are written against jaxlearn.callback's protocol: the Learner imports them, not the other way."""
    bad = [m for m, targets in GRAPH.items() if m.startswith("jaxlearn.callbacks") and "jaxlearn.learner" in targets]
    assert not bad, bad


def test_modules_hold_one_idea_and_nothing_is_patched_on():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
    patched = [m for m, p in MODULES.items() if "setattr(Learner" in p.read_text() or "@patch" in p.read_text()]
    assert not patched, patched


def test_the_core_step_is_the_core_alone():
    assert len(MODULES["jaxlearn.step"].read_text().splitlines()) <= 320


@pytest.mark.parametrize("module", ["jaxlearn", "jaxlearn.learner"])
def test_importing_the_core_loads_no_orbax_matplotlib_or_tensorflow(module):
    code = (f"import sys, {module}\n"
            "heavy = [m for m in ('orbax.checkpoint', 'matplotlib', 'tensorflow', 'tensorflow_datasets') "
            "if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_everyday_names_come_from_the_package_lazily():
    import jaxlearn
    from jaxlearn.callbacks.core import MetricsCB
    from jaxlearn.learner import Learner
    assert jaxlearn.Learner is Learner and jaxlearn.MetricsCB is MetricsCB
    assert {"Learner", "MetricsCB", "CheckpointCB", "load_learner", "fashion_mnist_loaders"} <= set(jaxlearn.__all__)
    assert set(jaxlearn.__all__) <= set(dir(jaxlearn))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        jaxlearn.nothing_here  # noqa: B018


def test_the_project_itself_uses_the_new_paths():
    """The 0.1 paths are for users' code: the package, its tests, experiments, benchmarks and notebooks use
    the modules as they are now (each import of a jaxlearn module names a real one)."""
    from jaxlearn._moved import MOVED
    root = PACKAGE.parent
    files = [p for d in ("jaxlearn", "tests", "experiments", "benchmarks") for p in (root / d).rglob("*.py")
             if p.name not in ("_moved.py", "test_layout.py")] + list((root / "notebooks").glob("*.ipynb"))
    pattern = re.compile(r"(?:from|import)\s+(" + "|".join(re.escape(m) for m in MOVED) + r")\b(?!\.)")
    short = {m.split(".", 1)[1] for m in MOVED}
    stale = [f"{p.relative_to(root)}: {m[1]}" for p in files for m in pattern.finditer(p.read_text())]
    stale += [f"{p.relative_to(root)}: from jaxlearn import {names}" for p in files
              for names in re.findall(r"from jaxlearn import ([\w ,]+)", p.read_text())
              if short & {n.split(" as ")[0].strip() for n in names.split(",")}]
    assert not stale, stale


def test_old_flat_module_paths_still_import_with_a_warning():
    from jaxlearn.nn.norms import BatchNorm
    sys.modules.pop("jaxlearn.norms", None)
    with pytest.warns(DeprecationWarning, match="jaxlearn.norms moved to jaxlearn.nn.norms"):
        from jaxlearn.norms import BatchNorm as old
    assert old is BatchNorm
    with pytest.raises(AttributeError, match="jaxlearn.norms.nothing_here is gone"):
        sys.modules["jaxlearn.norms"].nothing_here  # noqa: B018
