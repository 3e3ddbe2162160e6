"""Dataset presets, read from small files built here in each dataset's exact on-disk format."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from advhooks.data import (
    DataNotFoundError,
    ImageArrayDataset,
    labels_of,
    load_cifar10,
    load_cifar100,
    load_dataset,
    load_digits,
    load_mnist,
    load_svhn,
)


def test_digits_is_embedded_scaled_and_split_by_seed():
    train, test = load_digits(seed=0)
    assert (len(train), len(test)) == (1348, 449)
    x = train.tensors[0]
    assert x.shape[1:] == (1, 8, 8) and x.min() >= 0 and x.max() <= 1 and x.max() == 1
    again, _ = load_digits(seed=0)
    other, _ = load_digits(seed=1)
    assert torch.equal(again.tensors[1], train.tensors[1])
    assert not torch.equal(other.tensors[1], train.tensors[1])


def _write_idx(path, array, gz=False):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path, gz):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    imgs = {s: rng.integers(0, 256, (n, 28, 28)) for s, n in (("train", 6), ("t10k", 4))}
    labs = {s: rng.integers(0, 10, (n,)) for s, n in (("train", 6), ("t10k", 4))}
    for s in ("train", "t10k"):
        _write_idx(raw / f"{s}-images-idx3-ubyte", imgs[s], gz)
        _write_idx(raw / f"{s}-labels-idx1-ubyte", labs[s], gz)
    train, test = load_mnist(tmp_path)
    assert len(train) == 6 and len(test) == 4
    x, y = train[2]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    torch.testing.assert_close(x[0], torch.tensor(imgs["train"][2], dtype=torch.float32) / 255)
    assert int(y) == labs["train"][2]
    assert torch.equal(labels_of(test), torch.tensor(labs["t10k"]))


def test_mnist_truncated_idx_is_refused(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw / "train-images-idx3-ubyte", np.zeros((3, 28, 28)))
    (raw / "train-images-idx3-ubyte").write_bytes((raw / "train-images-idx3-ubyte").read_bytes()[:-10])
    _write_idx(raw / "train-labels-idx1-ubyte", np.zeros(3))
    for s in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / s).write_bytes(b"")
    with pytest.raises(ValueError, match="truncated|not .*IDX"):
        load_mnist(tmp_path)


def _cifar_records(n, label_bytes, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, (n, label_bytes))
    pixels = rng.integers(0, 256, (n, 3072))
    return np.concatenate([labels, pixels], axis=1).astype(np.uint8), labels[:, -1], pixels


def test_cifar10_binary_batches(tmp_path):
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    expected = []
    for i in range(1, 6):
        rec, lab, pix = _cifar_records(3, 1, i)
        rec.tofile(root / f"data_batch_{i}.bin")
        expected.append((lab, pix))
    rec, test_lab, _ = _cifar_records(2, 1, 9)
    rec.tofile(root / "test_batch.bin")
    train, test = load_cifar10(tmp_path, augment=True)
    assert len(train) == 15 and len(test) == 2
    assert train.augment and not test.augment
    assert torch.equal(labels_of(train)[:3], torch.tensor(expected[0][0]))
    # Channel-major rows of 32 pixels, as in the CIFAR binary format.
    assert train.images[0, 1, 0, 0] == expected[0][1][0, 1024]
    x, _ = train[0]
    assert x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert torch.equal(labels_of(test), torch.tensor(test_lab))


def test_cifar100_uses_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-binary"
    root.mkdir()
    rec, fine, _ = _cifar_records(4, 2, 0)
    rec.tofile(root / "train.bin")
    rec.tofile(root / "test.bin")
    train, _ = load_cifar100(tmp_path)
    assert torch.equal(labels_of(train), torch.tensor(fine))


def test_svhn_mat_files(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("test", 3)):
        X = rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8)
        y = np.array([[10], [1], [2], [3], [4]][:n], dtype=np.uint8)
        savemat(tmp_path / f"{split}_32x32.mat", {"X": X, "y": y})
    train, test = load_svhn(tmp_path)
    assert len(train) == 5 and len(test) == 3
    assert labels_of(train).tolist() == [0, 1, 2, 3, 4]  # SVHN's "10" is the digit 0
    assert train.images.shape == (5, 3, 32, 32)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-bin"),
                                         ("cifar100", "cifar-100-binary"), ("svhn", "")])
def test_missing_data_says_where_to_put_it(tmp_path, name, folder):
    with pytest.raises(DataNotFoundError) as err:
        load_dataset(name, tmp_path)
    assert str(tmp_path / folder).rstrip("/") in str(err.value) and "--download" in str(err.value)


def test_pickled_cifar_is_not_read_and_the_message_says_why(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataNotFoundError, match="needs no unpickling"):
        load_cifar10(tmp_path)


def test_load_dataset_errors():
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="data_dir"):
        load_dataset("mnist")


def test_image_array_dataset_validates():
    with pytest.raises(ValueError, match="uint8"):
        ImageArrayDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="labels"):
        ImageArrayDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3))
