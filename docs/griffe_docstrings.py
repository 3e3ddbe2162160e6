"""A griffe extension for the API reference: reads advhooks' docstrings as they are written.

The docstrings follow the Google style with two habits of their own, adapted here at build time (the
source files stay as they are):

- an ``Example:`` section holds doctests; griffe reads a singular ``Example:`` as an admonition (plain
  text, where ``[a][b]`` would even become a link), so it is read as ``Examples:``;
- cross-references are written with Sphinx roles (``:class:`~advhooks.StepOutput```), which Markdown
  does not know; each becomes inline code with the name as written (the last part only after ``~``).

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


def _role(match: re.Match[str]) -> str:
    name = match.group(2)
    if match.group(1):
        name = name.rsplit(".", 1)[-1]
    return f"`{name}`"


class AdvhooksDocstrings(griffe.Extension):
    """Rewrite each docstring (and hide protocol methods) once the object tree is built."""

    def on_class(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        for name in list(cls.members):
            if name.startswith("__") and name.endswith("__") and name not in _SHOWN_SPECIAL:
                cls.del_member(name)

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(_role, text)
