"""Dataset presets: the embedded digits (no download) and MNIST, CIFAR-10/100 and SVHN from a local folder.

Images come in pixel space, float32 in [0, 1]; normalisation, where a model wants it, sits inside the
model so that attacks and ε work in pixel units.

Files are read from MNIST's IDX files (``DATA_DIR/MNIST/raw/``, the layout torchvision downloads),
CIFAR-10 and CIFAR-100 in either the *binary* version (``DATA_DIR/cifar-10-batches-bin/``,
``DATA_DIR/cifar-100-binary/``) or the *python* version (``DATA_DIR/cifar-10-batches-py/``,
``DATA_DIR/cifar-100-python/``), and SVHN's MATLAB files (``DATA_DIR/train_32x32.mat``,
``test_32x32.mat``). Nothing is downloaded unless asked (``download=True``; for CIFAR it fetches the
binary version).

Why the CIFAR python version is read, and why that is safe: it is what torchvision's ``CIFAR10`` and
``CIFAR100`` download, so it is what most users already have on disk. Its batches are pickles, and a
plain ``pickle.load`` of a file can run any code the file names. advhooks unpickles them with an
allowlisting unpickler that can construct only numpy arrays (numpy's ``_reconstruct``,
``numpy.ndarray``, ``numpy.dtype``) besides pickle's own dicts, lists, strings, bytes and numbers, as
``torch.load(weights_only=True)`` does for tensors: a payload that would call anything else (``open``,
``os.system``, ...) is refused with :class:`UnsafePickleError` when the unpickler meets the name, before
anything runs. The arrays and labels are then checked (uint8 ``(N, 3072)``, ``N`` labels in range).
When both versions are present, the binary one is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from .._datasets import labels_of
from .readers import UnsafePickleError, read_cifar_bin, read_cifar_py, read_idx

__all__ = [
    "DATASETS",
    "DataNotFoundError",
    "DatasetInfo",
    "ImageArrayDataset",
    "UnsafePickleError",
    "labels_of",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "load_mnist1d",
    "load_svhn",
    "train_fraction",
]


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are not where they should be; the message says where to put them."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset preset."""

    name: str
    num_classes: int
    shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # The L∞ strength the literature trains this data at (the study shows its ratio to ε*). The digits have none
    # of their own: CIFAR-10's 8/255 is the yardstick there.
    customary_eps: float = 8 / 255


DIGITS_FILE = Path(__file__).with_name("digits.npz")  # the embedded default data set (see load_digits)

DATASETS = {
    "digits": DatasetInfo("digits", 10, (1, 8, 8), (0.0,), (1.0,)),
    "mnist": DatasetInfo("mnist", 10, (1, 28, 28), (0.0,), (1.0,), customary_eps=0.3),
    "cifar10": DatasetInfo("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": DatasetInfo("cifar100", 100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": DatasetInfo("svhn", 10, (3, 32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "mnist1d": DatasetInfo("mnist1d", 10, (1, 40), (0.5472,), (0.0996,)),  # mean and spread after the map to [0, 1]
}


class ImageArrayDataset(Dataset):
    """uint8 images ``(N, C, H, W)`` and int labels, served as float32 in [0, 1].

    Args:
        images: uint8 tensor ``(N, C, H, W)``.
        labels: int64 tensor ``(N,)``.
        augment: random crop (padding 4) and horizontal flip, as in Rice et al.'s CIFAR training.
        seed: seed of the augmentation's randomness (see below).

    How the augmentation is seeded: in the main process (``DataLoader(num_workers=0)`` or indexing the
    dataset directly) it draws from one generator seeded with ``seed`` that keeps advancing, so each epoch
    gets new crops and flips and a fresh dataset with the same ``seed``, read in the same order, gives the
    same ones. In a ``DataLoader`` worker it draws from a generator seeded from ``seed`` and the worker's
    ``torch.utils.data.get_worker_info().seed``, which differs per worker and per epoch and derives from
    the loader's base seed: the workers do not repeat each other's augmentation nor the previous epoch's,
    and a loader with a seeded ``generator=`` (or under ``torch.manual_seed``) gives the same batches on
    every run. With workers the batches differ from those of ``num_workers=0``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: bool = False, seed: int = 0) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images, self.labels, self.augment, self.seed = images, labels.long(), augment, int(seed)
        self._gen = torch.Generator().manual_seed(self.seed)
        self._worker_key: tuple[int, int] | None = None  # (worker id, worker seed) that _worker_gen serves
        self._worker_gen: torch.Generator | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def _generator(self) -> torch.Generator:
        info = torch.utils.data.get_worker_info()
        if info is None:
            return self._gen
        if self._worker_gen is None or self._worker_key != (info.id, info.seed):
            # Mix the dataset's seed with the worker's (base seed of this epoch's loader iterator + worker id).
            mixed = np.random.SeedSequence([self.seed & (2**64 - 1), info.seed & (2**64 - 1)])
            self._worker_gen = torch.Generator().manual_seed(int(mixed.generate_state(1, np.uint64)[0]))
            self._worker_key = (info.id, info.seed)
        return self._worker_gen

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.images[index].float().div_(255.0)
        if self.augment:
            gen = self._generator()
            _, h, w = img.shape
            padded = torch.nn.functional.pad(img, (4, 4, 4, 4))
            top, left = (int(v) for v in torch.randint(0, 9, (2,), generator=gen))
            img = padded[:, top : top + h, left : left + w]
            if torch.rand((), generator=gen) < 0.5:
                img = img.flip(-1)
        return img, self.labels[index]


def load_digits(seed: int = 0, test_fraction: float = 0.25) -> tuple[TensorDataset, TensorDataset]:
    """The 8×8 digits shipped with advhooks (1,797 images, no download, no extra), scaled to [0, 1], split
    with ``seed``.

    They are the test part of the UCI "Optical Recognition of Handwritten Digits" data set (E. Alpaydin and
    C. Kaynak, 1998; CC BY 4.0), the copy scikit-learn bundles as ``sklearn.datasets.load_digits``, stored
    here as integer pixels 0..16 in ``digits.npz`` (read with numpy, nothing unpickled).

    Example:
        >>> train, test = load_digits()
        >>> len(train), len(test), tuple(train[0][0].shape)
        (1348, 449, (1, 8, 8))
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    with np.load(DIGITS_FILE, allow_pickle=False) as arrays:
        images, labels = arrays["images"], arrays["labels"]
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(labels, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(y) * test_fraction))
    test, train = perm[:n_test], perm[n_test:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test])


def load_mnist1d() -> tuple[TensorDataset, TensorDataset]:
    """MNIST-1D (Greydanus, 2020): 4,000 training and 1,000 test signals of 40 samples, 10 classes, generated
    offline (about 2 s) by the ``mnist1d`` package (``pip install 'advhooks[bench]'``) from its default
    arguments, so always the same set; its download path is never used.

    The signals (about zero mean, unit spread) are mapped affinely into [0, 1] with the training set's minimum
    and maximum (test values outside are clipped), so that ε means what it means for images: a fraction of the
    range. Samples are ``(1, 40)``: one channel for a 1-D convolution, flattened by an MLP.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise ImportError("MNIST-1D is generated by the mnist1d package: pip install 'advhooks[bench]'") from None
    data = make_dataset(get_dataset_args())
    low, high = float(data["x"].min()), float(data["x"].max())

    def part(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        scaled = ((torch.tensor(x, dtype=torch.float32) - low) / (high - low)).clamp_(0.0, 1.0)
        return TensorDataset(scaled.unsqueeze(1), torch.tensor(y, dtype=torch.long))

    return part(data["x"], data["y"]), part(data["x_test"], data["y_test"])


def _missing(name: str, where: Path, what: str) -> DataNotFoundError:
    return DataNotFoundError(
        f"{name} not found: expected {what} under {where}. Put the files there, or pass --download "
        f"(download=True) to fetch them."
    )


def load_mnist(data_dir: str | Path, download: bool = False) -> tuple[ImageArrayDataset, ImageArrayDataset]:
    """MNIST from ``data_dir/MNIST/raw`` (IDX files, optionally gzipped; torchvision's layout)."""
    raw = Path(data_dir) / "MNIST" / "raw"
    files = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    try:
        return tuple(  # type: ignore[return-value]
            ImageArrayDataset(torch.from_numpy(read_idx(raw / img, 3).copy()).unsqueeze(1),
                              torch.from_numpy(read_idx(raw / lab, 1).astype(np.int64)))
            for img, lab in files.values()
        )
    except FileNotFoundError:
        if not download:
            raise _missing("MNIST", raw, "the IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                                         "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (or .gz)") from None
    import torchvision

    torchvision.datasets.MNIST(str(data_dir), train=True, download=True)
    torchvision.datasets.MNIST(str(data_dir), train=False, download=True)
    return load_mnist(data_dir, download=False)


@dataclass(frozen=True)
class _CifarLayout:
    name: str
    num_classes: int
    bin_folder: str
    bin_train: tuple[str, ...]
    bin_test: tuple[str, ...]
    label_bytes: int
    py_folder: str
    py_train: tuple[str, ...]
    py_test: tuple[str, ...]
    py_label_key: bytes
    url: str


_CIFAR10 = _CifarLayout(
    "CIFAR-10", 10, "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",), 1,
    "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), b"labels",
    "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz")
_CIFAR100 = _CifarLayout(
    "CIFAR-100", 100, "cifar-100-binary", ("train.bin",), ("test.bin",), 2,
    "cifar-100-python", ("train",), ("test",), b"fine_labels",
    "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz")


def _load_cifar(data_dir: str | Path, download: bool, augment: bool, layout: _CifarLayout):
    bin_root, py_root = Path(data_dir) / layout.bin_folder, Path(data_dir) / layout.py_folder
    has_bin = all((bin_root / f).exists() for f in layout.bin_train + layout.bin_test)
    has_py = all((py_root / f).exists() for f in layout.py_train + layout.py_test)
    if not has_bin and not has_py:
        if not download:
            raise DataNotFoundError(
                f"{layout.name} not found: expected either the binary version under {bin_root} "
                f"({', '.join(layout.bin_train + layout.bin_test)}; {layout.url}) or the python version "
                f"torchvision downloads under {py_root} ({', '.join(layout.py_train + layout.py_test)}). "
                f"Put the files there, or pass --download (download=True) to fetch the binary version.")
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(layout.url, download_root=str(data_dir))
        has_bin = True

    def read(files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        if has_bin:
            parts = [read_cifar_bin(bin_root / f, layout.label_bytes) for f in files]
        else:
            parts = [read_cifar_py(py_root / f, layout.py_label_key, layout.num_classes) for f in files]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    train, test = (layout.bin_train, layout.bin_test) if has_bin else (layout.py_train, layout.py_test)
    return ImageArrayDataset(*read(train), augment=augment), ImageArrayDataset(*read(test))


def load_cifar10(data_dir: str | Path, download: bool = False, augment: bool = False):
    """CIFAR-10 from ``data_dir/cifar-10-batches-bin`` (binary version) or ``data_dir/cifar-10-batches-py``
    (python version, torchvision's; read with an unpickler that builds only numpy arrays)."""
    return _load_cifar(data_dir, download, augment, _CIFAR10)


def load_cifar100(data_dir: str | Path, download: bool = False, augment: bool = False):
    """CIFAR-100 (fine labels) from ``data_dir/cifar-100-binary`` (binary version) or
    ``data_dir/cifar-100-python`` (python version, torchvision's; read with an unpickler that builds only
    numpy arrays)."""
    return _load_cifar(data_dir, download, augment, _CIFAR100)


def load_svhn(data_dir: str | Path, download: bool = False):
    """SVHN (cropped digits) from ``data_dir/train_32x32.mat`` and ``test_32x32.mat``."""
    from scipy.io import loadmat

    root = Path(data_dir)
    out = []
    for split in ("train", "test"):
        path = root / f"{split}_32x32.mat"
        if not path.exists():
            if not download:
                raise _missing("SVHN", root, "train_32x32.mat and test_32x32.mat")
            from torchvision.datasets.utils import download_url

            download_url(f"http://ufldl.stanford.edu/housenumbers/{split}_32x32.mat", str(root))
        mat = loadmat(str(path))
        images = torch.from_numpy(np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1)))
        labels = torch.from_numpy(mat["y"].astype(np.int64).reshape(-1) % 10)  # SVHN stores digit 0 as 10
        out.append(ImageArrayDataset(images, labels))
    return out[0], out[1]


_LOADERS: dict[str, Callable[..., tuple[Dataset, Dataset]]] = {
    "mnist": lambda d, dl, aug, seed: load_mnist(d, dl),
    "cifar10": lambda d, dl, aug, seed: load_cifar10(d, dl, aug),
    "cifar100": lambda d, dl, aug, seed: load_cifar100(d, dl, aug),
    "svhn": lambda d, dl, aug, seed: load_svhn(d, dl),
}


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = False, augment: bool = False,
                 seed: int = 0) -> tuple[Dataset, Dataset]:
    """Train and test sets of a preset: ``digits``, ``mnist1d``, ``mnist``, ``cifar10``, ``cifar100``, ``svhn``.

    Args:
        name: the preset.
        data_dir: folder holding the files (not needed for ``digits`` and ``mnist1d``, which are made here).
        download: fetch missing files (only when asked).
        augment: training-set augmentation for the CIFAR presets (crop + flip).
        seed: the digits' train/test split seed.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    if name == "digits":
        return load_digits(seed)
    if name == "mnist1d":
        return load_mnist1d()
    if data_dir is None:
        raise ValueError(f"dataset {name!r} is read from a local folder: pass data_dir (--data-dir)")
    return _LOADERS[name](data_dir, download, augment, seed)


def train_fraction(dataset: Dataset, fraction: float, split_seed: int = 0) -> Dataset:
    """A fraction of a training set, drawn with ``split_seed`` (not the runs' seeds): the same samples every time.

    Subsets are nested: for one ``split_seed`` the first ``round(fraction · n)`` samples of one permutation, so
    half the data is part of three quarters of it. ``fraction = 1`` returns ``dataset`` itself.
    """
    fraction = float(fraction)
    if not 0 < fraction <= 1:
        raise ValueError(f"train fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return dataset
    size = max(1, round(fraction * len(dataset)))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(int(split_seed)))
    return torch.utils.data.Subset(dataset, sorted(order[:size].tolist()))
