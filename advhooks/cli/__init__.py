"""The ``advhooks`` command line (typer): one module per command group, holding only option parsing and calls.

Library errors become one line on stderr and exit code 2 (:func:`advhooks.errors.one_line_errors`). Nothing
here imports torch until a command runs, so ``advhooks --help`` answers at once.
"""

from . import benchmark, connectivity, demo, estimate, evaluate, info, study, theory  # noqa: F401 - they register
from .app import PRESET_NAMES, app

__all__ = ["PRESET_NAMES", "app", "main"]


def main() -> None:
    """Entry point of the ``advhooks`` console script."""
    app()
