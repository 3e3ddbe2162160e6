"""The benchmark file: one safetensors file holding the clean model's weights (``weights.<name>``), the
per-sample clean test losses (``stats.test_losses``) and the header as JSON in the metadata (key
``advhooks.record``). :func:`read_header` parses only the header, so reading the header never reads the
weights, and nothing is ever unpickled. Writes are atomic (a temporary file renamed into place).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .._files import atomic_write, write_json_atomic
from .._version import __version__

__all__ = ["SCHEMA_VERSION", "BenchmarkFormatError", "check_header", "read_header", "read_tensors", "write_file",
           "write_json_atomic"]

SCHEMA_VERSION = 1
_RECORD_KEY = "advhooks.record"
WEIGHTS = "weights."
TEST_LOSSES = "stats.test_losses"
_MAX_HEADER = 100 * 1024 * 1024


class BenchmarkFormatError(ValueError):
    """A file is not a readable advhooks clean benchmark (truncated, wrong schema, not safetensors)."""


def write_file(path: Path, record: Mapping[str, Any], weights: Mapping[str, torch.Tensor] | None,
               test_losses: torch.Tensor | None) -> Path:
    """Write a benchmark file atomically: the header as metadata, the weights and per-sample losses as tensors."""
    tensors = {WEIGHTS + k: v.detach().cpu().contiguous() for k, v in (weights or {}).items()}
    if test_losses is not None:
        tensors[TEST_LOSSES] = test_losses.detach().cpu().float().contiguous()
    if not tensors:  # safetensors needs at least a header; keep the file well-formed
        tensors["stats.empty"] = torch.zeros(0)
    metadata = {"format": "pt", _RECORD_KEY: json.dumps(dict(record), sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The weights and the per-sample test losses of a benchmark file (safetensors: never unpickles)."""
    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types on corrupt data
        raise BenchmarkFormatError(f"{path}: cannot read tensors: {err}") from None
    return {k[len(WEIGHTS):]: v for k, v in tensors.items() if k.startswith(WEIGHTS)}, tensors.get(TEST_LOSSES)


_REQUIRED_VALUES = ("clean_test_loss", "clean_test_accuracy", "n_test")
# What each record field must hold; None is accepted for the optional ones.
_RECORD_TYPES = {
    "clean_test_loss": "a number", "clean_train_loss": "a number", "generalization_gap": "a number",
    "clean_test_accuracy": "a number", "clean_train_accuracy": "a number", "test_loss_stderr": "a number",
    "n_test": "an integer", "n_train": "an integer", "best_epoch": "an integer", "criterion": "a string",
    "dataset": "an object", "model": "an object", "training": "an object", "advhooks_version": "a string",
    "torch_version": "a string", "created": "a string",
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _has_kind(value: Any, kind: str) -> bool:
    if kind == "a number":
        return _is_int(value) or isinstance(value, float)  # NaN allowed: a stderr of one sample
    if kind == "an integer":
        return _is_int(value) and value >= 0
    if kind == "a string":
        return isinstance(value, str)
    return isinstance(value, dict)


def check_header(record: Mapping[str, Any], path: Any) -> None:
    """Refuse a record with a missing required value or a field of the wrong kind."""
    missing = set(_REQUIRED_VALUES) - record.keys()
    if missing:
        raise BenchmarkFormatError(f"{path}: the header lacks {sorted(missing)}")
    for key, kind in _RECORD_TYPES.items():
        value = record.get(key)
        if value is None and key not in _REQUIRED_VALUES:
            continue
        if not _has_kind(value, kind):
            raise BenchmarkFormatError(f"{path}: malformed header: {key} = {value!r} is not {kind}")
    if not (math.isfinite(record["clean_test_loss"]) and record["clean_test_loss"] > 0):
        raise BenchmarkFormatError(f"{path}: malformed header: clean_test_loss must be finite and > 0")


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The benchmark header from a file's safetensors header, reading nothing past the header.

    Raises:
        FileNotFoundError: no such file.
        BenchmarkFormatError: not a safetensors file, truncated, not an advhooks benchmark, or a schema
            version this library cannot read.
    """
    path = Path(path)
    header = _safetensors_header(path)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or _RECORD_KEY not in meta:
        raise BenchmarkFormatError(f"{path}: a safetensors file, but not an advhooks clean benchmark (no header)")
    try:
        record = json.loads(meta[_RECORD_KEY])
    except (TypeError, json.JSONDecodeError):
        raise BenchmarkFormatError(f"{path}: the benchmark header is not valid JSON") from None
    if not isinstance(record, dict):
        raise BenchmarkFormatError(f"{path}: the benchmark header is not a JSON object")
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BenchmarkFormatError(
            f"{path}: benchmark schema version {version!r}; this advhooks ({__version__}) reads version "
            f"{SCHEMA_VERSION}. Re-record it with `advhooks benchmark-clean`."
        )
    return record


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The safetensors header as a JSON object, checked against the file's size (a truncated file is refused)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise BenchmarkFormatError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > _MAX_HEADER or n > size - 8:
            raise BenchmarkFormatError(f"{path}: not a safetensors file (header length {n} does not fit the file)")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BenchmarkFormatError(f"{path}: not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise BenchmarkFormatError(f"{path}: not a safetensors file (header is not a JSON object)")
    end = max((_data_end(path, name, entry) for name, entry in header.items() if name != "__metadata__"), default=0)
    if end > size - 8 - n:
        raise BenchmarkFormatError(f"{path}: truncated ({size} bytes; the header describes {8 + n + end})")
    return header


def _data_end(path: Path, name: str, entry: Any) -> int:
    """Where a tensor's data ends in the data section, from its header entry (refused when malformed)."""
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)
            and offsets[0] <= offsets[1]):
        raise BenchmarkFormatError(f"{path}: not a safetensors file (bad entry for tensor {name!r})")
    return offsets[1]
