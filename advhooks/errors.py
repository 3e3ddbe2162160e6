"""Bad input as one line and exit code 2, never a traceback: how the CLI and the example scripts refuse it.

Bad input reaches a command as the library's own errors (``ValueError``, which ``BenchmarkFormatError`` and
the argument checks raise), file-system errors (``OSError``) or a missing optional extra (``ImportError``).
A ``TypeError``, ``KeyError`` or anything else raised inside the library is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["one_line_errors", "user_message"]

F = TypeVar("F", bound=Callable[..., Any])


def user_message(err: BaseException) -> str:
    """The first line of an error, or an ``OSError``'s reason and file name."""
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.strerror}: {err.filename}"
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def one_line_errors(fn: F) -> F:
    """Wrap a script's or a command's entry point: bad input prints ``error: ...`` on stderr and exits with 2.

    Example:
        >>> @one_line_errors
        ... def main():
        ...     raise ValueError("eps must be a finite number >= 0, got -1")
        >>> try:
        ...     main()
        ... except SystemExit as exit:
        ...     exit.code
        2
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, OSError, ImportError) as err:
            sys.stderr.write(f"error: {user_message(err)}\n")  # an entry point's answer to a person
            sys.stderr.flush()
            raise SystemExit(2) from None

    return wrapper  # type: ignore[return-value]
