"""Dataset presets, read from small files built here in each dataset's exact on-disk format."""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from advhooks.kit.data import (
    DataNotFoundError,
    ImageArrayDataset,
    UnsafePickleError,
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


def test_mnist1d_is_generated_offline_into_the_unit_range():
    pytest.importorskip("mnist1d", reason="MNIST-1D needs the bench extra: pip install 'advhooks[bench]'")
    from advhooks.kit.data import DATASETS
    from advhooks.kit.presets import get_preset

    train, test = load_dataset("mnist1d")
    x, y = train.tensors
    assert (len(train), len(test)) == (4000, 1000) and x.shape[1:] == (1, 40) and sorted(y.unique().tolist()) == list(
        range(10))
    assert x.min() == 0 and x.max() == 1 and 0 <= test.tensors[0].min() and test.tensors[0].max() <= 1
    info = DATASETS["mnist1d"]  # the spread the presets' models normalise by is the data's
    assert x.mean().item() == pytest.approx(info.mean[0], abs=1e-3) and x.std().item() == pytest.approx(info.std[0],
                                                                                                        abs=1e-3)
    again, _ = load_dataset("mnist1d")
    assert torch.equal(again.tensors[0], x)  # always the same set
    for name in ("mnist1d-mlp", "mnist1d-cnn"):
        assert get_preset(name).model(8)(x[:3]).shape == (3, 10)


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


@pytest.mark.parametrize("loader,folders", [(load_cifar10, ("cifar-10-batches-bin", "cifar-10-batches-py")),
                                            (load_cifar100, ("cifar-100-binary", "cifar-100-python"))])
def test_missing_cifar_names_both_accepted_folders(tmp_path, loader, folders):
    (tmp_path / folders[1]).mkdir()  # an incomplete python version is not enough
    with pytest.raises(DataNotFoundError) as err:
        loader(tmp_path)
    assert all(str(tmp_path / f) in str(err.value) for f in folders)


# --- CIFAR's python version: pickles written by Python 2 -------------------------------------------------

_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct, without importing a deprecated module


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote the CIFAR files: str and bytes as BINSTRING (loaded as bytes with
    ``encoding="bytes"``), numpy's ``_reconstruct`` under the module name given. ``unicode=True`` writes
    str as BINUNICODE instead (loaded as str), as an attacker's payload may."""

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, reconstruct_module="numpy.core.multiarray", unicode=False):
        super().__init__(file, protocol=2)
        self.reconstruct_module, self.unicode = reconstruct_module, unicode

    def _save_py2_str(self, obj):
        if isinstance(obj, str) and self.unicode:
            return self.save_str(obj)
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str

    def save_global(self, obj, name=None):
        if obj is _RECONSTRUCT:
            self.write(pickle.GLOBAL + f"{self.reconstruct_module}\n_reconstruct\n".encode())
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def _py2_pickle(obj, reconstruct_module="numpy.core.multiarray", unicode=False):
    import io

    buf = io.BytesIO()
    _Py2Pickler(buf, reconstruct_module, unicode).dump(obj)
    return buf.getvalue()


def _cifar_py_batch(n, seed, label_keys=(b"labels",), num_classes=10):
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"training batch 1 of 5",
             b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
             b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)]}
    for key in label_keys:
        batch[key] = [int(v) for v in rng.integers(0, num_classes, n)]
    return batch


def _write_cifar_bin(path, data, labels):
    labels = np.asarray(labels, dtype=np.uint8).reshape(len(data), -1)
    np.concatenate([labels, data], axis=1).astype(np.uint8).tofile(path)


@pytest.mark.parametrize("reconstruct_module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_cifar10_python_version_is_read_like_the_binary_one(tmp_path, reconstruct_module):
    py_dir, bin_dir = tmp_path / "py", tmp_path / "bin"
    (py_dir / "cifar-10-batches-py").mkdir(parents=True)
    (bin_dir / "cifar-10-batches-bin").mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {name: _cifar_py_batch(3 if name != "test_batch" else 2, seed) for seed, name in enumerate(names)}
    for name, batch in batches.items():
        payload = _py2_pickle(batch, reconstruct_module)
        assert reconstruct_module.encode() in payload and b"U\x04data" in payload  # Python 2's layout
        (py_dir / "cifar-10-batches-py" / name).write_bytes(payload)
        _write_cifar_bin(bin_dir / "cifar-10-batches-bin" / f"{name}.bin", batch[b"data"], batch[b"labels"])
    train, test = load_cifar10(py_dir, augment=True)
    assert (len(train), len(test)) == (15, 2) and train.augment and not test.augment
    train_data = np.concatenate([batches[n][b"data"] for n in names[:5]])
    assert torch.equal(train.images, torch.from_numpy(train_data).reshape(15, 3, 32, 32))
    assert labels_of(train).tolist() == sum((batches[n][b"labels"] for n in names[:5]), [])
    assert labels_of(test).tolist() == batches["test_batch"][b"labels"]
    x, _ = test[1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    torch.testing.assert_close(x, torch.from_numpy(batches["test_batch"][b"data"][1]).reshape(3, 32, 32) / 255)
    bin_train, bin_test = load_cifar10(bin_dir)
    assert torch.equal(bin_train.images, train.images) and torch.equal(bin_test.images, test.images)
    assert torch.equal(labels_of(bin_train), labels_of(train)) and torch.equal(labels_of(bin_test), labels_of(test))


def test_cifar100_python_version_uses_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    batches = {}
    for seed, name in enumerate(("train", "test")):
        batches[name] = _cifar_py_batch(4, seed, (b"fine_labels", b"coarse_labels"), num_classes=100)
        batches[name][b"coarse_labels"] = [v % 20 for v in batches[name][b"coarse_labels"]]
        (root / name).write_bytes(_py2_pickle(batches[name]))
        _write_cifar_bin(tmp_path / f"{name}.bin", batches[name][b"data"],
                         np.stack([batches[name][b"coarse_labels"], batches[name][b"fine_labels"]], axis=1))
    train, test = load_cifar100(tmp_path)
    assert labels_of(train).tolist() == batches["train"][b"fine_labels"]
    assert labels_of(test).tolist() == batches["test"][b"fine_labels"]
    assert train.images.shape == (4, 3, 32, 32)
    (tmp_path / "cifar-100-binary").mkdir()
    for name in ("train", "test"):
        (tmp_path / f"{name}.bin").rename(tmp_path / "cifar-100-binary" / f"{name}.bin")
    bin_train, _ = load_cifar100(tmp_path)  # now read from the binary version: the same tensors
    assert torch.equal(bin_train.images, train.images) and torch.equal(labels_of(bin_train), labels_of(train))


def test_binary_version_is_preferred_when_both_are_present(tmp_path):
    (tmp_path / "cifar-100-python").mkdir()
    (tmp_path / "cifar-100-binary").mkdir()
    for name in ("train", "test"):
        (tmp_path / "cifar-100-python" / name).write_bytes(b"not read")
        rec, _, _ = _cifar_records(2, 2, 0)
        rec.tofile(tmp_path / "cifar-100-binary" / f"{name}.bin")
    train, _ = load_cifar100(tmp_path)
    assert len(train) == 2


def _open_payload(target):
    class WouldOpen:
        def __reduce__(self):
            return open, (str(target), "w")

    return WouldOpen()


def _system_payload(target):
    class WouldRun:
        def __reduce__(self):
            return os.system, (f"touch {target}",)

    return WouldRun()


@pytest.mark.parametrize("make_payload,refused", [(_open_payload, "open"), (_system_payload, "system")])
def test_cifar_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path, make_payload, refused):
    proof = tmp_path / "proof"  # the same payload, loaded by plain pickle, does run
    result = pickle.loads(_py2_pickle({b"data": make_payload(proof)}, unicode=True), encoding="bytes")
    getattr(result[b"data"], "close", lambda: None)()
    assert proof.exists()

    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    target = tmp_path / "pwned"
    batch = _cifar_py_batch(2, 0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (root / name).write_bytes(_py2_pickle(batch))
    (root / "data_batch_1").write_bytes(_py2_pickle({b"labels": [0, 1], b"data": make_payload(target)}, unicode=True))
    with pytest.raises(UnsafePickleError, match=rf"refusing to unpickle \S*{refused} from \S*data_batch_1: "
                                                rf"only numpy arrays are allowed") as err:
        load_cifar10(tmp_path)
    assert isinstance(err.value, ValueError)
    assert not target.exists()


def _good_batch():
    return _cifar_py_batch(2, 0)


@pytest.mark.parametrize("change,message", [
    (lambda b: b.update({b"data": b[b"data"].astype(object)}), r"uint8 array of shape \(N, 3072\), got object"),
    (lambda b: b.update({b"data": b[b"data"][:, :3000]}), r"uint8 array of shape \(N, 3072\), got uint8 .*3000"),
    (lambda b: b.update({b"data": b[b"data"].reshape(2, 3, 32, 32)}), r"shape \(N, 3072\)"),
    (lambda b: b.update({b"labels": [0, 10]}), r"labels must be in \[0, 10\)"),
    (lambda b: b.update({b"labels": [0]}), r"1 labels for 2 images"),
    (lambda b: b.update({b"labels": [0, "1"]}), r"list of ints"),
    (lambda b: b.pop(b"data"), r"not a CIFAR python batch: expected a dict"),
], ids=["object-dtype", "wrong-width", "4d", "label-range", "label-count", "label-type", "missing-key"])
def test_cifar_python_batch_with_bad_content_is_refused(tmp_path, change, message):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (root / name).write_bytes(_py2_pickle(_good_batch()))
    bad = _good_batch()
    change(bad)
    (root / "data_batch_3").write_bytes(_py2_pickle(bad))
    with pytest.raises(ValueError, match=message) as err:
        load_cifar10(tmp_path)
    assert "data_batch_3" in str(err.value)


def test_cifar_python_batch_that_is_not_a_pickle_is_refused(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (root / name).write_bytes(_py2_pickle(_good_batch())[:-20])
    with pytest.raises(ValueError, match="data_batch_1 is not a CIFAR python batch"):
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
