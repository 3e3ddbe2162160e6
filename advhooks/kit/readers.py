"""Reading the dataset files: MNIST's IDX files, CIFAR's binary batches and its python batches, whose pickles go
through an unpickler that can build only numpy arrays (a security boundary: a file that names anything else
is refused before it runs; see :mod:`advhooks.kit.data` for why the python version is read at all).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

__all__ = ["NumpyOnlyUnpickler", "UnsafePickleError", "open_maybe_gz", "read_cifar_bin", "read_cifar_py", "read_idx"]


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickled dataset file names something other than what rebuilds numpy arrays; nothing was run."""




def open_maybe_gz(path: Path):
    if path.exists():
        return open(path, "rb")
    gz = path.with_name(path.name + ".gz")
    if gz.exists():
        return gzip.open(gz, "rb")
    raise FileNotFoundError(path)


def read_idx(path: Path, expected_dims: int) -> np.ndarray:
    with open_maybe_gz(path) as fh:
        data = fh.read()
    if len(data) < 4:
        raise ValueError(f"{path} is not an IDX file (too short)")
    zero, dtype_code, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or dims != expected_dims:
        raise ValueError(f"{path} is not a uint8 IDX file with {expected_dims} dimension(s)")
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {body.size} values")
    return body.reshape(shape)




def read_cifar_bin(path: Path, label_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    record = label_bytes + 3 * 32 * 32
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0 or data.size % record:
        raise ValueError(f"{path} is not a CIFAR binary batch ({data.size} bytes is not a multiple of {record})")
    rows = data.reshape(-1, record)
    labels = torch.from_numpy(rows[:, label_bytes - 1].astype(np.int64))  # CIFAR-100: the fine label
    images = torch.from_numpy(rows[:, label_bytes:].reshape(-1, 3, 32, 32).copy())
    return images, labels


try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

# The only names a CIFAR python batch needs: what pickle calls to rebuild a numpy array. Returned as
# these objects, never looked up by importing the module the file names.
_NUMPY_PICKLE_ALLOWLIST = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,  # written by numpy 1.x (the CIFAR files)
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,  # written by numpy 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, bytes, numbers and numpy arrays; refuses every other class or function."""

    def __init__(self, file, source: str) -> None:
        super().__init__(file, encoding="bytes")  # the CIFAR files were written by Python 2: bytes keys
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return _NUMPY_PICKLE_ALLOWLIST[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refusing to unpickle {module}.{name} from {self.source}: only numpy arrays "
                                    f"are allowed") from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refusing to unpickle a persistent id from {self.source}: only numpy arrays "
                                f"are allowed")


def read_cifar_py(path: Path, label_key: bytes, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of the CIFAR python version (a pickled dict), read with :class:`NumpyOnlyUnpickler`."""
    try:
        with open(path, "rb") as fh:
            batch = NumpyOnlyUnpickler(fh, str(path)).load()
    except UnsafePickleError:
        raise
    except Exception as err:  # truncated or not a pickle: pickle raises many kinds
        raise ValueError(f"{path} is not a CIFAR python batch: {type(err).__name__}: {err}") from None
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path} is not a CIFAR python batch: expected a dict with keys b'data' and "
                         f"{label_key!r}, got {keys}")
    data, labels = batch[b"data"], batch[label_key]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        what = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: b'data' must be a uint8 array of shape (N, 3072), got {what}")
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu" and labels.ndim == 1:
        labels = labels.tolist()
    if not isinstance(labels, list) or not all(type(v) is int for v in labels):
        raise ValueError(f"{path}: {label_key!r} must be a list of ints")
    if len(labels) != data.shape[0]:
        raise ValueError(f"{path}: {len(labels)} labels for {data.shape[0]} images")
    if labels and not 0 <= min(labels) <= max(labels) < num_classes:
        raise ValueError(f"{path}: labels must be in [0, {num_classes}), got [{min(labels)}, {max(labels)}]")
    images = torch.from_numpy(np.array(data, copy=True).reshape(-1, 3, 32, 32))
    return images, torch.tensor(labels, dtype=torch.long)
