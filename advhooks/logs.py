"""The library's logger: status reaches a person without any logging configuration.

As transformers does for its library logger, the ``advhooks`` logger carries a default handler to stderr,
so warnings (the ε ≫ ε* flag, a recipe mismatch, a run too short for the monitor's warm-up) show with no
setup. The handler stays silent once the application configures logging itself (a handler on the root
logger), so nothing is printed twice; ``set_verbosity(logging.INFO)`` (or ``PhaseMonitor(verbose=True)``)
also shows the per-epoch lines.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["LIBRARY_LOGGER", "set_verbosity"]

LIBRARY_LOGGER = "advhooks"


class _UnlessTheAppLogs(logging.Filter):
    """Pass records only while the root logger has no handler of the application's."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not logging.getLogger().handlers


def _configure() -> None:
    logger = logging.getLogger(LIBRARY_LOGGER)
    if any(getattr(h, "_advhooks_default", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("advhooks %(levelname)s: %(message)s"))
    handler.addFilter(_UnlessTheAppLogs())
    handler._advhooks_default = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


def set_verbosity(level: int) -> None:
    """Set the level of the ``advhooks`` logger (``logging.INFO`` shows the monitor's per-epoch lines)."""
    logging.getLogger(LIBRARY_LOGGER).setLevel(level)


_configure()
