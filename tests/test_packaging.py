"""The tested versions are pinned for CI: `make test` (and `.ci/run`, which calls it) installs with
constraints.txt, whose pins are what this suite runs on; pyproject.toml keeps ranges for users."""

import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ("jax", "jaxlib", "flax", "optax", "chex", "numpy", "orbax-checkpoint", "tensorflow-datasets")


def pins() -> dict[str, str]:
    lines = [line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    found = dict(re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line).groups() for line in lines
                 if line and not line.startswith("#"))
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in found.items()}


def test_make_test_and_ci_install_the_pinned_versions():
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in makefile and "constraints.txt" in makefile.split("$(VENV)/.installed:")[1]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_core_packages_are_pinned_to_what_this_suite_runs_on():
    pinned = pins()
    for name in CORE:
        assert name in pinned, f"{name} is not pinned in constraints.txt"
        assert metadata.version(name) == pinned[name], (
            f"{name} {metadata.version(name)} is installed but constraints.txt pins {pinned[name]}: run the suite "
            f"with `make test` (a fresh .venv), or after an upgrade passes, `make constraints`")


def test_users_get_ranges_not_pins():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in deps if "==" in d], "pyproject.toml pins a dependency: pins belong in constraints.txt"
