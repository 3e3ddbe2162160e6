"""Import paths that moved after advhooks 0.1.0: they keep working, with a DeprecationWarning, for one release.

The experiment kit (data, models, presets, training recipes, ε* estimators, demo, theory, checkpoints) went
to :mod:`advhooks.kit`; :func:`step_decay` went to :mod:`advhooks.schedules` and
:func:`record_clean_benchmark` to :mod:`advhooks.kit.training`; ``advhooks.attacks.objectives`` is now
:mod:`advhooks.attacks.criteria` (an attack's ``objective=`` is now ``criterion=``). An old module path is an
alias of the new module (the same object, so ``isinstance`` and monkeypatching still agree).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Any

__all__ = ["MOVED_MODULES", "MOVED_NAMES", "install", "moved_attribute"]

MOVED_MODULES = {f"advhooks.{name}": f"advhooks.kit.{name}"
                 for name in ("data", "models", "presets", "training", "estimate", "demo", "checkpoints", "theory")}
MOVED_MODULES["advhooks.attacks.objectives"] = "advhooks.attacks.criteria"  # an attack's "objective" is its criterion
MOVED_NAMES = {("advhooks.benchmark", "step_decay"): "advhooks.schedules",
               ("advhooks.benchmark", "record_clean_benchmark"): "advhooks.kit.training"}


def _stacklevel() -> int:
    """The stack level of the first frame outside this module and the import machinery: the importer."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_code.co_filename.startswith("<frozen importlib")
                                 or frame.f_code.co_filename == __file__ or frame.f_code.co_name == "__getattr__"):
        frame, level = frame.f_back, level + 1
    return level


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old path goes in the next release", DeprecationWarning,
                  stacklevel=_stacklevel())


def _new_name(fullname: str) -> str | None:
    for old, new in MOVED_MODULES.items():
        if fullname == old or fullname.startswith(old + "."):
            return new + fullname[len(old):]
    return None


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: Any) -> Any:
        return importlib.import_module(self.target)

    def exec_module(self, module: Any) -> None:  # the target module is already executed
        pass


class _MovedModules(importlib.abc.MetaPathFinder):
    """Answers only for the old paths; first on ``sys.meta_path``, so that an old submodule path
    (``advhooks.theory.linear``) is the new module too, not a second copy found through the alias's path."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        new = _new_name(fullname)
        if new is None:
            return None
        _warn(fullname, new)
        return importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    """Put the finder for the old module paths on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModules())


def moved_attribute(module: str, name: str) -> Any:
    """A module ``__getattr__``'s answer for a name that moved out of ``module``."""
    new = MOVED_NAMES.get((module, name))
    if new is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    _warn(f"{module}.{name}", f"{new}.{name}")
    return getattr(importlib.import_module(new), name)
