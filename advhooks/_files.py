"""Writing a file so that a reader never sees half of it: a temporary file in the same folder, flushed to disk,
then renamed into place (the one way every file of advhooks is written)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "write_json_atomic"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(temporary path)``, then rename the file into ``path`` (parent folders created); on any error
    the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # (mkstemp makes it 0600: the file gets the mode an open() would give)
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, value: Any) -> Path:
    """Write ``value`` as JSON (indented, keys sorted), atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(value, indent=2, sort_keys=True)))
