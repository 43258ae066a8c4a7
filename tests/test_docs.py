"""The API reference reads and builds: every public object has a docstring, the everyday names' docstrings name
every argument, every reST cross-reference (``:func:`~jaxlearn.x.y```) points at a real object, ``make docs``
(docs/build_api.py, pdoc) renders the package without a warning, and ``help(Learner)`` names its callbacks.

Public: the names in a module's ``__all__`` (the lazy tables of ``jaxlearn`` and ``jaxlearn.callbacks``
included), every module-level function or class without a leading underscore, and the methods and properties
without one of those classes. Each object is checked once, in the module that defines it."""

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import pydoc
import re
import subprocess
import sys
import types
from pathlib import Path

import flax.linen as nn

import jaxlearn
from jaxlearn._moved import MOVED

ROOT = Path(__file__).resolve().parents[1]
MODULES = {name: importlib.import_module(name)
           for name in ["jaxlearn"] + sorted(m.name for m in pkgutil.walk_packages(jaxlearn.__path__, "jaxlearn."))}
PACKAGES = [m for m in MODULES.values() if hasattr(m, "__path__")]
ROLE = re.compile(r":(?:py:)?(func|class|mod|meth|attr|data|exc|obj):`([^`]+)`")


def is_function(obj) -> bool:
    """A function, or a function wrapped by ``jax.jit`` / ``jax.custom_vjp`` / ``functools.lru_cache``."""
    return inspect.isroutine(obj) or inspect.isfunction(getattr(obj, "__wrapped__", None))


def defined_in(obj, module: str) -> bool:
    return (inspect.isclass(obj) or is_function(obj)) and getattr(obj, "__module__", None) == module


def own_doc(obj) -> str:
    """The object's own docstring: not one inherited from a base class, nor the signature a dataclass writes."""
    if inspect.isclass(obj):
        doc = vars(obj).get("__doc__") or ""
        if dataclasses.is_dataclass(obj) and re.fullmatch(rf"{obj.__name__}\(.*\)", doc, re.S) and "\n" not in doc:
            return ""
        return doc.strip()
    return (getattr(obj, "__doc__", None) or "").strip()


def variable_docstrings(module: types.ModuleType) -> dict[str, str]:
    """pdoc's variable docstrings: a string literal right after a module-level assignment, by name."""
    try:
        body = ast.parse(inspect.getsource(module)).body
    except (OSError, TypeError):
        return {}
    docs = {}
    for statement, following in zip(body, body[1:] + [None]):
        targets = statement.targets if isinstance(statement, ast.Assign) else \
            [statement.target] if isinstance(statement, ast.AnnAssign) else []
        documented = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant) \
            and isinstance(following.value.value, str)
        for target in targets:
            if isinstance(target, ast.Name):
                docs[target.id] = following.value.value.strip() if documented else ""
            elif isinstance(target, ast.Tuple):  # ``A, B = 1, 2``: no docstring can follow either name
                docs.update((t.id, "") for t in target.elts if isinstance(t, ast.Name))
    return docs


VARIABLE_DOCS = {name: variable_docstrings(module) for name, module in MODULES.items()}


def public_names(module_name: str) -> set[str]:
    module = MODULES[module_name]
    own = {n for n, obj in vars(module).items() if not n.startswith("_") and defined_in(obj, module_name)}
    return own | set(getattr(module, "__all__", ()))


def home_of(name: str, obj, module_name: str) -> str:
    """The module that defines ``obj`` (for a variable: the one that assigns ``name``)."""
    if inspect.isclass(obj) or is_function(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    for candidate, docs in VARIABLE_DOCS.items():
        if name in docs and getattr(MODULES[candidate], name, None) is obj:
            return f"{candidate}.{name}"
    return f"{module_name}.{name}"


def is_attribute(cls, name: str) -> bool:
    """Whether ``name`` is a data attribute of ``cls`` that happens to hold a function: a dataclass field (an
    initializer's default) or the override of a base's data attribute (a callback's ``capture`` filter)."""
    if name in getattr(cls, "__dataclass_fields__", {}):
        return True
    return any(name in vars(base) and not (is_function(vars(base)[name]) or isinstance(
        vars(base)[name], (classmethod, staticmethod, property))) for base in cls.__mro__[1:])


def public_objects() -> dict[str, object]:
    """``{home.qualname: object}`` for every public object."""
    found = {}
    for module_name, module in MODULES.items():
        for name in public_names(module_name):
            obj = getattr(module, name)
            if not isinstance(obj, types.ModuleType):
                found[home_of(name, obj, module_name)] = obj
    for qualname, cls in list(found.items()):
        if inspect.isclass(cls) and cls.__module__.startswith("jaxlearn"):
            for name, member in vars(cls).items():
                if not name.startswith("_") and not is_attribute(cls, name) and \
                        (isinstance(member, (classmethod, staticmethod, property)) or is_function(member)):
                    found[f"{qualname}.{name}"] = member
    return found


PUBLIC = public_objects()


def member_doc(qualname: str, member) -> str:
    """A method's docstring; an override of a documented jaxlearn method (a callback hook) inherits its doc."""
    function = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
    if own_doc(function):
        return own_doc(function)
    cls_name, _, name = qualname.rpartition(".")
    cls = PUBLIC.get(cls_name)
    for base in getattr(cls, "__mro__", ())[1:]:
        if base.__module__.startswith("jaxlearn") and name in vars(base):
            return member_doc(f"{base.__module__}.{base.__qualname__}.{name}", vars(base)[name])
    return ""


def docstring_of(qualname: str, obj) -> str:
    if inspect.isclass(obj) or is_function(obj) and not inspect.isclass(PUBLIC.get(qualname.rpartition(".")[0])):
        return own_doc(obj)
    if isinstance(obj, (classmethod, staticmethod, property)) or is_function(obj):
        return member_doc(qualname, obj)
    module_name, _, name = qualname.rpartition(".")
    return VARIABLE_DOCS.get(module_name, {}).get(name, "")


def test_every_public_object_has_a_docstring():
    missing = sorted(q for q, obj in PUBLIC.items() if not docstring_of(q, obj))
    assert not missing, f"{len(missing)} public objects without a docstring:\n" + "\n".join(missing)


def parameters(obj) -> list[str]:
    """What a caller passes: the signature's parameters (a class: its ``__init__``'s or the dataclass fields;
    a flax module's own ``parent`` and ``name`` left out), without self, cls, ``*args`` and ``**kwargs``."""
    skipped = {"self", "cls"} | ({"parent", "name"} if inspect.isclass(obj) and issubclass(obj, nn.Module) else set())
    try:
        signature = inspect.signature(obj)
    except ValueError:  # an exception class: Python's own constructor
        return []
    return [p.name for p in signature.parameters.values()
            if p.name not in skipped and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def test_the_everyday_names_document_every_argument():
    missing = []
    for name in jaxlearn.__all__:
        obj = getattr(jaxlearn, name)
        if not (inspect.isclass(obj) or is_function(obj)):
            continue
        doc = own_doc(obj) + "\n" + (own_doc(vars(obj).get("__init__")) if inspect.isclass(obj) else "")
        absent = [p for p in parameters(obj) if not re.search(rf"\b{re.escape(p)}\b", doc)]
        if absent:
            missing.append(f"jaxlearn.{name} ({obj.__module__}): {', '.join(absent)}")
    assert not missing, "arguments the docstring does not name:\n" + "\n".join(missing)


def docstrings():
    """``(where, docstring, module, class or None)`` for every docstring in the package: modules, functions and
    classes (public or not), methods and properties, variables."""
    for module_name, module in MODULES.items():
        yield module_name, module.__doc__ or "", module, None
        for name, doc in VARIABLE_DOCS[module_name].items():
            yield f"{module_name}.{name}", doc, module, None
        for name, obj in vars(module).items():
            if not defined_in(obj, module_name):
                continue
            yield f"{module_name}.{name}", getattr(obj, "__doc__", None) or "", module, \
                obj if inspect.isclass(obj) else None
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    function = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
                    if inspect.isfunction(function) or is_function(function):
                        yield f"{module_name}.{name}.{attr}", function.__doc__ or "", module, obj


MISSING = object()


def attribute(obj, name: str):
    """``getattr(obj, name)``, a dataclass / NamedTuple field of the class ``obj`` (fields without a default are
    no class attributes), or MISSING; jaxlearn 0.1's module paths (importable for a release) count as missing."""
    value = getattr(obj, name, MISSING)
    if value is MISSING and inspect.isclass(obj):
        fields = getattr(obj, "__dataclass_fields__", None) or dict.fromkeys(getattr(obj, "_fields", ()))
        value = fields.get(name, MISSING) if name in fields else MISSING
    if isinstance(value, types.ModuleType) and value.__name__ in MOVED:
        return MISSING
    return value


def follow(obj, dotted: str):
    for part in dotted.split("."):
        if obj is MISSING:
            break
        obj = attribute(obj, part)
    return obj


def resolve_absolute(target: str):
    """``target`` as a dotted path from an importable module (``jaxlearn.data.DataLoaders``, ``optax.adam``)."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        if module_name in MOVED:
            return MISSING
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        return follow(module, ".".join(parts[i:])) if i < len(parts) else module
    return MISSING


def resolve(target: str, module: types.ModuleType, cls):
    """An absolute target, else one relative to the class and module of the docstring, then to jaxlearn and its
    subpackages (``:func:`fit_one_cycle```)."""
    found = resolve_absolute(target)
    for base in ([cls] if cls is not None else []) + [module] + PACKAGES:
        if found is MISSING:
            found = follow(base, target)
    return found


def test_every_cross_reference_resolves():
    broken = []
    for where, doc, module, cls in docstrings():
        for role, written in ROLE.findall(doc):
            target = re.sub(r".*<(.+)>$", r"\1", written).lstrip("~").removesuffix("()").strip()
            found = resolve(target, module, cls)
            if found is MISSING or role == "mod" and not isinstance(found, types.ModuleType):
                broken.append(f"{where}: :{role}:`{written}`")
    assert not broken, f"{len(broken)} cross-references that point nowhere:\n" + "\n".join(broken)


def test_make_docs_renders_the_package_without_warnings(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "build_api.py"), str(tmp_path), "--no-source"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pdoc:" not in result.stderr, result.stderr
    pages = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.html")}
    expected = {name.replace(".", "/") + ".html" for name in MODULES
                if not any(part.startswith("_") for part in name.split("."))}
    assert expected <= pages, f"modules without a page: {sorted(expected - pages)}"
    front = (tmp_path / "jaxlearn.html").read_text()
    assert "Where to start" in front and 'href="jaxlearn/learner.html' in front and 'id="Learner"' in front


def test_the_front_page_points_at_every_everyday_name():
    """The package docstring (the reference's index page) lists every name of the lazy table, by purpose."""
    referenced = {target.lstrip("~") for _, target in ROLE.findall(jaxlearn.__doc__)}
    missing = sorted(set(jaxlearn.__all__) - referenced)
    assert not missing, f"everyday names the front page (jaxlearn/__init__.py's docstring) does not list: {missing}"


def test_help_on_the_learner_names_its_callbacks():
    text = pydoc.render_doc(jaxlearn.Learner, renderer=pydoc.plaintext)
    for name in ("MetricsCB", "HealthCB", "CheckpointCB", "EarlyStoppingCB", "jaxlearn.callbacks"):
        assert name in text, name
