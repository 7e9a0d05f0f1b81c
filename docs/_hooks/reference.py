"""MkDocs hook: one API reference page per module named in ``extra.api_reference``.

Adding a module to the reference is one line in ``mkdocs.yml``::

    extra:
      api_reference:
        - tokenflow.oidc

The page ``reference/tokenflow.oidc.md`` is generated at build time (nothing
is written to ``docs/``) and listed under "API reference" in the navigation.
A module's reference shows its docstring and every name in its ``__all__``,
each with its signature, types and docstring; ``tests/test_docs_reference.py``
checks that none is missing.
"""

from __future__ import annotations

from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

SECTION = "API reference"


def _modules(config: MkDocsConfig) -> list[str]:
    modules = config.extra.get("api_reference") or []
    if not all(isinstance(m, str) and m for m in modules):
        raise ValueError("extra.api_reference in mkdocs.yml must be a list of module names")
    return list(modules)


def page_path(module: str) -> str:
    """Where a module's reference page lives in the site's sources."""
    return f"reference/{module}.md"


def page_source(module: str) -> str:
    """The Markdown of a module's reference page: one mkdocstrings block.

    The module's own heading is the page's title, and an anchor that
    ``:mod:`` references in docstrings link to.
    """
    return f"::: {module}\n    options:\n      show_root_heading: true\n      heading_level: 1\n"


def on_config(config: MkDocsConfig, **kwargs: Any) -> MkDocsConfig:
    """Add the reference pages to the navigation, after whatever ``nav`` lists."""
    entries = [{module: page_path(module)} for module in _modules(config)]
    nav: list[Any] = list(config.nav or [])
    nav = [item for item in nav if not (isinstance(item, dict) and SECTION in item)]
    nav.append({SECTION: entries})
    config.nav = nav
    return config


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    """Generate each module's page in memory."""
    for module in _modules(config):
        files.append(File.generated(config, page_path(module), content=page_source(module)))
    return files
