"""The documentation site's API reference covers every public name, each with a docstring.

The modules in the reference are the ones ``mkdocs.yml`` lists under
``extra.api_reference``. For each of them, every name in ``__all__`` must be
rendered (an anchor ``module.name`` on its page, in a real ``mkdocs build
--strict``) and must have a docstring, and so must the public methods and
properties of every public class. Every public module of the package must be
in the reference, or have all of its names re-exported by a module that is.

These tests need the ``docs`` extra. Without it they skip, unless
``TOKENFLOW_REQUIRE_DOCS=1``, which makes a missing extra an error (CI).
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = os.environ.get("TOKENFLOW_REQUIRE_DOCS") == "1"


def _import_or_skip(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        if REQUIRED:
            raise
        pytest.skip(
            f"{name} is missing: pip install -e '.[docs]' "
            "(TOKENFLOW_REQUIRE_DOCS=1 makes this an error)",
            allow_module_level=True,
        )


griffe: Any = _import_or_skip("griffe")
mkdocs_config: Any = _import_or_skip("mkdocs.config")
_import_or_skip("mkdocstrings_handlers.python")
_import_or_skip("material")

PACKAGE = "tokenflow"


def reference_modules() -> list[str]:
    """The modules the site documents, as ``mkdocs.yml`` lists them."""
    config = mkdocs_config.load_config(str(ROOT / "mkdocs.yml"))
    modules = config.extra.get("api_reference")
    assert isinstance(modules, list)
    assert modules, "mkdocs.yml lists no module under extra.api_reference"
    return [str(module) for module in modules]


MODULES = reference_modules()


@pytest.fixture(scope="module")
def package() -> Any:
    """The package as the reference sees it: read from source, not imported."""
    return griffe.load(PACKAGE, search_paths=[str(ROOT / "src")], resolve_aliases=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built the way CI builds it: strict, so any warning fails here."""
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(site_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"
    return site_dir


def _module(package: Any, path: str) -> Any:
    module = package if path == PACKAGE else package.get_member(path.removeprefix(PACKAGE + "."))
    assert module.is_module, f"{path} is not a module"
    return module


def _exports(module: Any) -> list[str]:
    exports = module.exports
    assert exports, f"{module.path} has no __all__: the reference could not tell its public names"
    return [str(name) for name in exports]


def _target(obj: Any) -> Any:
    return obj.final_target if obj.is_alias else obj


def _walk(module: Any) -> Iterator[Any]:
    yield module
    for submodule in module.modules.values():
        yield from _walk(submodule)


def missing_anchors(page: str, module: str, names: list[str]) -> list[str]:
    """The names whose anchor (``id="module.name"``) the rendered page lacks."""
    return [name for name in names if f'id="{module}.{name}"' not in page]


def undocumented(module: Any, names: list[str]) -> list[str]:
    """Names without a docstring, and public methods or properties of their classes without one."""
    missing = []
    for name in names:
        obj = _target(module.members[name])
        if not (obj.docstring and obj.docstring.value.strip()):
            missing.append(f"{module.path}.{name}")
        if not obj.is_class:
            continue
        for member_name, member in obj.members.items():
            if member_name.startswith("_"):
                continue
            member = _target(member)
            is_property = member.is_attribute and "property" in member.labels
            if (member.is_function or is_property) and not (
                member.docstring and member.docstring.value.strip()
            ):
                missing.append(f"{module.path}.{name}.{member_name}")
    return missing


@pytest.mark.parametrize("path", MODULES)
def test_every_public_name_is_rendered(package: Any, site: Path, path: str) -> None:
    page = site / "reference" / path / "index.html"
    assert page.is_file(), f"no reference page for {path}"
    html = page.read_text(encoding="utf-8")
    assert f'id="{path}"' in html, f"{path}'s page does not render the module itself"
    missing = missing_anchors(html, path, _exports(_module(package, path)))
    assert not missing, f"{path}: not in the rendered reference: {missing}"


@pytest.mark.parametrize("path", MODULES)
def test_every_public_name_has_a_docstring(package: Any, path: str) -> None:
    module = _module(package, path)
    names = _exports(module)
    absent = [name for name in names if name not in module.members]
    assert not absent, f"{path}.__all__ names what the module does not define: {absent}"
    missing = undocumented(module, names)
    assert not missing, f"public names without a docstring: {missing}"


@pytest.mark.parametrize("path", MODULES)
def test_docstring_cross_references_are_links(site: Path, path: str) -> None:
    """Sphinx roles (``:class:`Flow```) render as links, never as raw role text."""
    html = (site / "reference" / path / "index.html").read_text(encoding="utf-8")
    left = re.findall(r":(?:class|meth|func|mod|attr|data|exc|obj):", html)
    assert not left, f"{path}: roles rendered as text: {sorted(set(left))}"


def test_a_role_links_to_the_object_it_names(site: Path) -> None:
    # tokenflow.ports says ":class:`tokenflow.Flow` drives the sync ones".
    html = (site / "reference" / "tokenflow.ports" / "index.html").read_text(encoding="utf-8")
    assert 'href="../tokenflow/#tokenflow.Flow"' in html


def test_every_public_module_is_in_the_reference(package: Any) -> None:
    """A new public module fails here until it gets its line in mkdocs.yml.

    A module whose names all appear in a documented ancestor's ``__all__``
    (``tokenflow.testing.clock`` through ``tokenflow.testing``) is covered.
    """
    documented = {path: _module(package, path) for path in MODULES}
    uncovered = []
    for module in _walk(package):
        if module.path in documented or any(
            part.startswith("_") for part in module.path.split(".")
        ):
            continue
        ancestors = [documented[path] for path in documented if module.path.startswith(path + ".")]
        shown = {
            _target(ancestor.members[name]).path
            for ancestor in ancestors
            for name in _exports(ancestor)
        }
        names = [str(name) for name in module.exports or []]
        if not names or any(_target(module.members[n]).path not in shown for n in names):
            uncovered.append(module.path)
    assert not uncovered, (
        f"public modules missing from the API reference: {uncovered}; "
        "add each under extra.api_reference in mkdocs.yml"
    )


def test_the_checks_see_what_is_missing(package: Any) -> None:
    """The checks above can fail: a page without an anchor, a name without a docstring."""
    page = '<h2 id="tokenflow.Flow">Flow</h2>'
    assert missing_anchors(page, "tokenflow", ["Flow", "AsyncFlow"]) == ["AsyncFlow"]
    fake = griffe.Module("fake")
    fake.set_member("Bare", griffe.Class("Bare", parent=fake))
    assert undocumented(fake, ["Bare"]) == ["fake.Bare"]
