"""The package's layering, read off the source with :mod:`ast` (nothing is imported).

Rules, as docs/architecture.md states them:

1. **No import cycle** among tokenflow modules. Every ``import`` that runs is
   an edge: at module level and inside functions (a function-level import is
   how a cycle gets hidden, not removed). Imports under ``if TYPE_CHECKING:``
   never run and are not edges of the cycle check; they are still held to
   the layering rules below (a type-only dependency is still a dependency).
   ``from package import name`` is an edge to the package's ``__init__``
   unless ``name`` is a submodule; importing ``a.b.c`` is not counted as
   importing ``a`` and ``a.b`` (every module would then depend on
   ``tokenflow/__init__``).
2. **The core** (flow, model, token, key ring, cookies, CSRF, sessions,
   config, errors, ports, HTTP parsing, and the helpers they share) imports
   only the core: no driver, store, adapter, web or testing module.
3. **Stores** import no driver.
4. **No production module imports** ``tokenflow.testing`` (the terminal demo
   aside).
5. **Private means private to a package.** A private module (``_x``) at the
   top level is one of the package's shared internals, usable by every
   tokenflow module; one inside a subpackage (``tokenflow.stores._values``)
   is usable only inside that subpackage. A private *name* (``_x``: a
   function, class, constant or attribute) is usable only inside the package
   of the module that defines it: importing one from, or reaching one on an
   object of, a module outside the importer's own package fails.

Attribute access is checked as precisely as a source reading allows: on a
name bound by an import, against the module it came from; on any other
expression (``flow._core``), against the private attributes the importer's
own package defines (in ``__slots__``, ``self._x = ...``, class bodies and
``def _x``). So ``other._x`` inside the package that defines ``_x`` passes, and
a private attribute that only another package defines is caught.

``ALLOWED`` lists the exceptions, each with its reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
ROOT = "tokenflow"

CORE = frozenset(
    f"{ROOT}.{name}"
    for name in (
        "_base64url",
        "_config",
        "_cookies",
        "_csrf",
        "_dbsc",
        "_errors",
        "_flow",
        "events",
        "_http",
        "_keyring",
        "_model",
        "_sessions",
        "_throttle",
        "_token",
        "_transactions",
        "ports",
        "tokens",
    )
)
"""The core: pure logic, no I/O, no framework, nothing above it."""
DRIVERS = frozenset({f"{ROOT}._drivers", f"{ROOT}.observers"})
TERMINAL_DEMO = f"{ROOT}._demo"

ALLOWED: dict[tuple[str, str, str], str] = {
    # (rule, importer, what) -> why
    ("testing", f"{ROOT}._webdemo", f"{ROOT}.testing"): (
        "the web demo, like the terminal demo, signs in made-up users: it runs on the "
        "fake user directory and password verifier, and is never a production server"
    ),
}
"""Exceptions to the rules. Every entry says why; an entry that no longer
matches anything fails :func:`test_every_allowance_is_still_needed`."""


@dataclass(frozen=True)
class Import:
    """One imported module or name, as written in ``importer``."""

    importer: str
    module: str
    name: str | None
    """The name imported from ``module``, or None for the module itself."""
    line: int
    runtime: bool
    """False under ``if TYPE_CHECKING:``."""


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool

    @property
    def package(self) -> str:
        """The package this module belongs to (a package's ``__init__`` belongs to itself)."""
        return self.name if self.is_package else self.name.rpartition(".")[0]


def _modules(src: Path = SRC) -> dict[str, Module]:
    found = {}
    for path in sorted((src / ROOT).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        found[name] = Module(name, path, tree, is_package)
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, runtime: bool = True) -> Iterator[tuple[ast.AST, bool]]:
    """Every node under ``node``, with whether it runs (False under TYPE_CHECKING)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for inner in child.body:
                yield inner, False
                yield from _walk(inner, False)
            for inner in child.orelse:
                yield inner, runtime
                yield from _walk(inner, runtime)
            continue
        yield child, runtime
        yield from _walk(child, runtime)


def _resolve(module: Module, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.package.split(".")
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(module: Module, known: dict[str, Module] = MODULES) -> list[Import]:
    """Every tokenflow module or name that ``module`` imports."""
    found = []
    for node, runtime in _walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == ROOT:
                    found.append(Import(module.name, alias.name, None, node.lineno, runtime))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node.level, node.module)
            if base.split(".")[0] != ROOT:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    found.append(Import(module.name, sub, None, node.lineno, runtime))
                else:
                    found.append(Import(module.name, base, alias.name, node.lineno, runtime))
    return found


# -- the rules -------------------------------------------------------------------


NAMEDTUPLE_API = frozenset({"_replace", "_asdict", "_fields", "_field_defaults", "_make"})
"""Public methods of every named tuple (``urllib.parse.SplitResult._replace``...):
the underscore only keeps them clear of field names."""


def _private(name: str) -> bool:
    if name in NAMEDTUPLE_API:
        return False
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _layer(name: str) -> str:
    if name in CORE:
        return "core"
    if name in DRIVERS:
        return "driver"
    for prefix, layer in (
        (f"{ROOT}.testing", "testing"),
        (f"{ROOT}.stores", "store"),
        (f"{ROOT}.web", "web"),
    ):
        if name == prefix or name.startswith(prefix + "."):
            return layer
    return "adapter"


def _private_module_owner(name: str) -> str | None:
    """The subpackage a private module is private to (None: not private, or top level)."""
    parts = name.split(".")
    for index in range(2, len(parts)):
        if _private(parts[index]):
            return ".".join(parts[:index])
    return None


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@dataclass(frozen=True)
class Violation:
    rule: str
    importer: str
    what: str
    line: int
    detail: str

    def __str__(self) -> str:
        return f"{self.importer}:{self.line}: [{self.rule}] {self.detail}"


def layering_violations(modules: dict[str, Module] = MODULES) -> list[Violation]:
    """Rules 2 to 5 on every import (type-only imports included)."""
    out = []
    for module in modules.values():
        importer = module.name
        for imp in imports_of(module, modules):
            target = imp.module
            layer = _layer(importer)
            if layer == "core" and target not in CORE:
                out.append(
                    Violation(
                        "core",
                        importer,
                        target,
                        imp.line,
                        f"the core imports {target} ({_layer(target)})",
                    )
                )
            if layer == "store" and target in DRIVERS | {ROOT}:
                out.append(
                    Violation("store", importer, target, imp.line, f"a store imports {target}")
                )
            if _layer(target) == "testing" and layer != "testing" and importer != TERMINAL_DEMO:
                out.append(
                    Violation(
                        "testing",
                        importer,
                        f"{ROOT}.testing",
                        imp.line,
                        f"a production module imports {target}",
                    )
                )
            owner = _private_module_owner(target)
            if owner is not None and not _inside(importer, owner):
                out.append(
                    Violation(
                        "private-module",
                        importer,
                        target,
                        imp.line,
                        f"{target} is private to {owner}",
                    )
                )
            if imp.name is not None and _private(imp.name):
                home = modules[target].package if target in modules else target
                if home != module.package:
                    out.append(
                        Violation(
                            "private-name",
                            importer,
                            target,
                            imp.line,
                            f"imports the private name {imp.name} of {target}",
                        )
                    )
    return out


def _private_attributes(module: Module) -> set[str]:
    """Private attribute names ``module`` defines on its objects."""
    names: set[str] = set()
    for node in ast.walk(module.tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == "__slots__":
                    for const in ast.walk(node.value):
                        if isinstance(const, ast.Constant) and isinstance(const.value, str):
                            names.add(const.value)
    return {name for name in names if _private(name)}


def attribute_violations(modules: dict[str, Module] = MODULES) -> list[Violation]:
    """Rule 5 on attribute access: ``x._y`` and ``getattr(x, "_y")``."""
    by_package: dict[str, set[str]] = {}
    for module in modules.values():
        by_package.setdefault(module.package, set()).update(_private_attributes(module))
    out = []
    for module in modules.values():
        own = by_package.get(module.package, set())
        # Names bound by an import: where each came from.
        bound: dict[str, str] = {}
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ImportFrom):
                base = _resolve(module, node.level, node.module)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    bound[alias.asname or alias.name] = sub if sub in modules else base
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    bound[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0]
                    )
        for node in ast.walk(module.tree):
            owner: str | None
            if isinstance(node, ast.Attribute) and _private(node.attr):
                attr, value = node.attr, node.value
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and _private(node.args[1].value)
            ):
                attr, value = node.args[1].value, node.args[0]
            else:
                continue
            if isinstance(value, ast.Name) and value.id in ("self", "cls"):
                continue
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "super":
                continue
            if isinstance(value, ast.Name) and value.id in bound:
                source = bound[value.id]
                if source.split(".")[0] != ROOT:
                    continue  # another library's object: not this rule's business
                home = modules[source].package if source in modules else source
                owner = None if home == module.package else source
            else:
                owner = None if attr in own else "another package"
            if owner is not None:
                out.append(
                    Violation(
                        "private-attribute",
                        module.name,
                        attr,
                        node.lineno,
                        f"reaches the private attribute {attr} of {owner}",
                    )
                )
    return out


def runtime_graph(modules: dict[str, Module] = MODULES) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for module in modules.values():
        for imp in imports_of(module, modules):
            if imp.runtime and imp.module in modules and imp.module != module.name:
                graph[module.name].add(imp.module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _allowed(violation: Violation) -> bool:
    return (violation.rule, violation.importer, violation.what) in ALLOWED


# -- the tests -------------------------------------------------------------------


def test_no_import_cycle() -> None:
    found = cycles(runtime_graph())
    assert not found, f"import cycles among tokenflow modules: {found}"


@pytest.mark.parametrize("rule", ["core", "store", "testing", "private-module", "private-name"])
def test_layering(rule: str) -> None:
    broken = [v for v in layering_violations() if v.rule == rule and not _allowed(v)]
    assert not broken, "\n".join(map(str, broken))


def test_no_private_attribute_of_another_package() -> None:
    broken = [v for v in attribute_violations() if not _allowed(v)]
    assert not broken, "\n".join(map(str, broken))


def test_every_allowance_is_still_needed() -> None:
    seen = {(v.rule, v.importer, v.what) for v in [*layering_violations(), *attribute_violations()]}
    stale = [key for key in ALLOWED if key not in seen]
    assert not stale, f"allow-list entries that match nothing (delete them): {stale}"
    assert all(reason.strip() for reason in ALLOWED.values())


def test_the_core_and_the_edge_are_where_the_rules_say() -> None:
    """The rules are about real modules: a renamed core module must be renamed here too."""
    assert set(MODULES) >= CORE | DRIVERS
    assert {f"{ROOT}.web.asgi", f"{ROOT}.web.wsgi", f"{ROOT}.asgi", f"{ROOT}.wsgi"} <= set(MODULES)
    assert not any(_layer(name) == "core" for name in MODULES if name.startswith(f"{ROOT}.web"))


# -- the checks can fail ----------------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> dict[str, Module]:
    for relative, text in files.items():
        path = tmp_path / ROOT / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for directory in [tmp_path / ROOT, *(tmp_path / ROOT).rglob("*")]:
        if directory.is_dir() and not (directory / "__init__.py").exists():
            (directory / "__init__.py").write_text("", encoding="utf-8")
    return _modules(tmp_path)


def test_a_cycle_is_found_and_type_checking_imports_are_not_edges(tmp_path: Path) -> None:
    modules = _package(
        tmp_path,
        {
            "_model.py": "def f():\n    from ._http import g\n",
            "_http.py": "from ._model import f\n",
            "_a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._b import x\n",
            "_b.py": "from ._a import y\n",
        },
    )
    assert cycles(runtime_graph(modules)) == [[f"{ROOT}._http", f"{ROOT}._model"]]


def test_layering_violations_are_found(tmp_path: Path) -> None:
    modules = _package(
        tmp_path,
        {
            "_flow.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from .stores.memory import MemoryStore\n",
            "_token.py": "from .web import asgi\n",
            "_drivers.py": "",
            "stores/memory.py": "from .._drivers import Flow\nfrom . import _values\n",
            "stores/_values.py": "",
            "throttles/sqlite.py": "from ..stores._values import encode\n"
            "from ..stores.sqlite import _connect\n",
            "stores/sqlite.py": "def _connect(): ...\n",
            "oidc/__init__.py": "from ..testing import FakeClock\n",
            "testing/__init__.py": "from .clock import FakeClock\n",
            "testing/clock.py": "class FakeClock: ...\n",
            "_demo.py": "from .testing import FakeClock\n",
            "web/asgi.py": "from .._model import _NO_METADATA\nfrom .._base64url import b\n",
            "_model.py": "_NO_METADATA = {}\n",
            "_base64url.py": "def b(): ...\n",
        },
    )
    found = {(v.rule, v.importer, v.what) for v in layering_violations(modules)}
    assert found == {
        ("core", f"{ROOT}._flow", f"{ROOT}.stores.memory"),
        ("core", f"{ROOT}._token", f"{ROOT}.web.asgi"),
        ("store", f"{ROOT}.stores.memory", f"{ROOT}._drivers"),
        ("private-module", f"{ROOT}.throttles.sqlite", f"{ROOT}.stores._values"),
        ("private-name", f"{ROOT}.throttles.sqlite", f"{ROOT}.stores.sqlite"),
        ("testing", f"{ROOT}.oidc", f"{ROOT}.testing"),
        ("private-name", f"{ROOT}.web.asgi", f"{ROOT}._model"),
    }


def test_private_attribute_access_is_found(tmp_path: Path) -> None:
    modules = _package(
        tmp_path,
        {
            "_drivers.py": "class Flow:\n    __slots__ = ('_core',)\n"
            "    def f(self, other):\n        return self._core, other._core\n",
            "_model.py": "class Request:\n    @classmethod\n    def _parsed(cls): ...\n",
            "web/asgi.py": "from .._model import Request\n"
            "import os\n"
            "def call(flow):\n"
            "    flow._core.begin()\n"
            "    getattr(flow, '_random')\n"
            "    os._exit\n"
            "    return Request._parsed()\n",
        },
    )
    found = {(v.importer, v.what) for v in attribute_violations(modules)}
    assert found == {
        (f"{ROOT}.web.asgi", "_core"),
        (f"{ROOT}.web.asgi", "_random"),
        (f"{ROOT}.web.asgi", "_parsed"),
    }
