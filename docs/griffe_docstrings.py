"""A griffe extension for the API reference: reads advhooks' docstrings as they are written.

The docstrings follow the Google style with habits of their own, adapted here at build time (the source
files stay as they are):

- an ``Example:`` section holds doctests; griffe reads a singular ``Example:`` as an admonition (plain
  text, where ``[a][b]`` would even become a link), so it is read as ``Examples:``;
- cross-references are written with Sphinx roles (``:class:`~advhooks.StepOutput```), which Markdown
  does not know; each becomes inline code with the name as written (the last part only after ``~``);
- the paper's symbols R*(0), ε* and eps* are written with a bare star, which Markdown would read as
  emphasis; outside code the star is escaped.

It also leaves out of the pages the special methods that only implement Python protocols
(``__post_init__``, ``__repr__``, ``__getattr__``, ...); ``__call__`` stays, it is how an attack runs.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_SHOWN_SPECIAL = {"__call__", "__init__"}  # __init__ is merged into its class's entry
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")
_CODE_SPAN = re.compile(r"(`+)(?:.+?)\1")
_SYMBOL_STAR = re.compile(r"(?<=R|ε|θ|s)\*(?!\*)")  # R*(0), ε*, θ*, eps*


def _role(match: re.Match[str]) -> str:
    name = match.group(2)
    if match.group(1):
        name = name.rsplit(".", 1)[-1]
    return f"`{name}`"


def _escape_stars(line: str) -> str:
    """Escape the symbols' stars in one line of prose, leaving code spans as they are."""
    out, last = [], 0
    for span in _CODE_SPAN.finditer(line):
        out.append(_SYMBOL_STAR.sub(r"\\*", line[last : span.start()]))
        out.append(span.group(0))
        last = span.end()
    out.append(_SYMBOL_STAR.sub(r"\\*", line[last:]))
    return "".join(out)


def _rewrite(text: str) -> str:
    text = _ROLE.sub(_role, _EXAMPLE.sub(r"\1Examples:", text))
    lines, in_code = [], False
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith((">>>", "```")):
            in_code = True  # a doctest and its output, or a fenced block, run to the next blank line
        elif not stripped:
            in_code = False
        lines.append(line if in_code else _escape_stars(line))
    return "\n".join(lines)


def _rewrite_docstring(obj: griffe.Object) -> None:
    if obj.docstring is not None and not getattr(obj.docstring, "_advhooks_rewritten", False):
        obj.docstring.value = _rewrite(obj.docstring.value)
        obj.docstring._advhooks_rewritten = True  # once per docstring, whatever the hooks that reach it


class AdvhooksDocstrings(griffe.Extension):
    """Rewrite each docstring (and hide protocol methods) once the object tree is built."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _rewrite_docstring(pkg)

    def on_class(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        for name in list(cls.members):
            if name.startswith("__") and name.endswith("__") and name not in _SHOWN_SPECIAL:
                cls.del_member(name)

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        _rewrite_docstring(obj)
