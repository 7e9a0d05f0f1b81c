"""Griffe extension: tokenflow's reStructuredText-flavoured docstrings, read as Markdown.

The docstrings are written to read well in ``help()`` and editors, with Sphinx
cross-reference roles (``:class:`Flow```) and ``::`` before literal blocks.
This extension rewrites them, when the site is built only, into what
mkdocstrings renders well:

* a role becomes a cross-reference, resolved from the documented object's
  scope (``Flow`` inside ``tokenflow.ports`` is ``tokenflow._drivers.Flow``).
  It is emitted as an *optional* autoref: a target the site does not document
  (a class of redis-py, say) renders as plain code instead of failing the
  strict build;
* a paragraph ending in ``::`` ends in ``:``, as reStructuredText shows it;
* dunder methods that say nothing to a user (``__repr__``, ``__post_init__``,
  ``__slots__``, ``__eq__``, ``__hash__``) are left out of the reference.

The source files are never changed.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|obj|exc|const):`(~?)([^`<>]+)`")
_LITERAL_INTRO = re.compile(r"(\S)::$", re.MULTILINE)
_BARE_LITERAL_INTRO = re.compile(r"^(\s*)::$", re.MULTILINE)
_NOISE = frozenset({"__repr__", "__post_init__", "__slots__", "__eq__", "__hash__"})


# Where a name that the documented object's scope does not know is looked up
# next: the modules whose contracts other docstrings cite (``SessionStore.rotate``).
_FALLBACK_MODULES = ("", ".ports", ".stores", ".testing")


def _resolve(obj: griffe.Object, target: str) -> str:
    """The documented path ``target`` names, seen from ``obj``; ``target`` if unknown."""
    head, _, rest = target.partition(".")
    package = obj.package.name
    if head == package:
        return target
    scope: griffe.Object | None = obj
    while scope is not None:
        try:
            resolved = scope.resolve(head)
        except griffe.NameResolutionError:
            scope = scope.parent
            continue
        return f"{resolved}.{rest}" if rest else resolved
    for module in _FALLBACK_MODULES:
        path = f"{package}{module}.{target}"
        try:
            obj.modules_collection.get_member(path)
        except KeyError:
            continue
        return path
    return target


def rewrite(obj: griffe.Object, text: str) -> str:
    """``text`` with roles turned into optional autorefs and ``::`` into ``:``."""

    def role(match: re.Match[str]) -> str:
        short, target = match.group(1), match.group(2).strip()
        shown = target.rsplit(".", 1)[-1] if short else target
        identifier = html.escape(_resolve(obj, target), quote=True)
        code = f"<code>{html.escape(shown)}</code>"
        return f'<autoref identifier="{identifier}" optional>{code}</autoref>'

    text = _ROLE.sub(role, text)
    text = _BARE_LITERAL_INTRO.sub("", text)
    return _LITERAL_INTRO.sub(r"\1:", text)


class ReadRestRoles(griffe.Extension):
    """Rewrite every docstring of a package once it has been loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._walk(pkg, set())

    def _walk(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj, obj.docstring.value)
        if obj.is_class:
            for name in _NOISE.intersection(obj.members):
                del obj.members[name]
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, seen)  # type: ignore[arg-type]
