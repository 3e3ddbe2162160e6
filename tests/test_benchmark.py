"""CleanBenchmark: measuring, early stopping, the safetensors file, and refusing bad files."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

import advhooks.benchmark.file_format as benchmark_module
from advhooks.benchmark import (
    SCHEMA_VERSION,
    BenchmarkFormatError,
    CleanBenchmark,
    Recipe,
    read_header,
)
from advhooks.kit.data import load_digits
from advhooks.kit.models import MLP
from advhooks.kit.training import record_clean_benchmark


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


@pytest.fixture(scope="module")
def recorded(digits):
    torch.manual_seed(0)
    train, test = digits
    seen = []
    bench = record_clean_benchmark(MLP(64, hidden=32), train, test, recipe=Recipe(epochs=8),
                                   on_epoch=lambda e, tr, te: seen.append(te),
                                   training={"preset": "test"})
    return bench, seen


def test_early_stopping_keeps_the_best_test_loss_epoch(recorded):
    bench, seen = recorded
    best = min(range(len(seen)), key=seen.__getitem__)
    assert bench.best_epoch == best + 1
    assert bench.clean_test_loss == pytest.approx(seen[best], rel=1e-9)
    assert bench.generalization_gap == pytest.approx(bench.clean_test_loss - bench.clean_train_loss)
    assert (bench.n_train, bench.n_test) == (1348, 449)
    assert 0.5 < bench.clean_test_accuracy <= 1.0
    assert bench.dataset["n_train"] == 1348 and bench.dataset["num_classes"] == 10
    assert bench.model["num_parameters"] == sum(p.numel() for p in MLP(64, hidden=32).parameters())
    assert bench.training["epochs"] == 8 and bench.training["preset"] == "test"


def test_round_trip(recorded, tmp_path):
    bench, _ = recorded
    path = bench.save(tmp_path / "clean.safetensors")
    loaded = CleanBenchmark.load(path)
    assert loaded.header() == bench.header()
    for k, v in bench.state_dict.items():
        assert torch.equal(v, loaded.state_dict[k])
    torch.testing.assert_close(loaded.test_losses, bench.test_losses)
    model = loaded.load_weights_into(MLP(64, hidden=32))
    again = CleanBenchmark.measure(model, DataLoader(load_digits(0)[1], batch_size=100))
    assert again.clean_test_loss == pytest.approx(bench.clean_test_loss, rel=1e-6)
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file


def test_reading_the_record_does_not_read_the_weights(recorded, tmp_path, monkeypatch):
    bench, _ = recorded
    path = bench.save(tmp_path / "clean.safetensors")

    def refuse(*args, **kwargs):
        raise AssertionError("the tensors were read")

    monkeypatch.setattr(benchmark_module, "load_file", refuse)
    read = CleanBenchmark.read(path)
    assert read.clean_test_loss == bench.clean_test_loss and read.state_dict is None
    assert read_header(path)["schema_version"] == SCHEMA_VERSION


def test_bootstrap_interval_brackets_the_mean(recorded):
    bench, _ = recorded
    lo, hi = bench.bootstrap_interval()
    assert lo < bench.clean_test_loss < hi
    assert hi - lo < 6 * bench.test_loss_stderr


def test_mismatched_model_is_refused(recorded):
    with pytest.raises(ValueError, match="does not match"):
        recorded[0].load_weights_into(MLP(64, hidden=16))


def test_truncated_file_is_refused(recorded, tmp_path):
    path = recorded[0].save(tmp_path / "clean.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(BenchmarkFormatError, match="truncated"):
        CleanBenchmark.read(tmp_path / "cut.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(data[:5])
    with pytest.raises(BenchmarkFormatError, match="not a safetensors file"):
        CleanBenchmark.load(tmp_path / "tiny.safetensors")


def test_wrong_schema_version_is_refused(recorded, tmp_path):
    record = recorded[0].header() | {"schema_version": SCHEMA_VERSION + 1}
    path = tmp_path / "future.safetensors"
    save_file({"stats.empty": torch.zeros(0)}, str(path), metadata={"advhooks.record": json.dumps(record)})
    with pytest.raises(BenchmarkFormatError, match="schema version"):
        CleanBenchmark.read(path)


def test_plain_safetensors_is_not_a_benchmark(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(BenchmarkFormatError, match="not an advhooks clean benchmark"):
        CleanBenchmark.read(path)


class _Payload:
    """Unpickling this would create a file: proof of whether anything was unpickled."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickle_renamed_safetensors_is_refused_without_executing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "clean.safetensors"
    path.write_bytes(pickle.dumps(_Payload(str(marker))))
    assert not marker.exists()
    for read in (CleanBenchmark.read, CleanBenchmark.load, read_header):
        with pytest.raises(BenchmarkFormatError):
            read(path)
    assert not marker.exists()
    # The payload is real: unpickling it does create the file.
    pickle.loads(path.read_bytes()).close()
    assert marker.exists()


def test_measure_needs_per_sample_losses():
    data = [(torch.rand(4, 3), torch.randint(0, 2, (4,)))]
    with pytest.raises(ValueError, match="one loss per sample"):
        CleanBenchmark.measure(nn.Linear(3, 2), data, criterion=lambda z, y: z.sum())


def test_record_never_copies_the_tensors():
    class NoCopy:
        def __deepcopy__(self, memo):
            raise AssertionError("record() copied a tensor field")

    net = nn.Linear(4, 3)
    data = [(torch.rand(8, 4), torch.randint(0, 3, (8,)))]
    bench = CleanBenchmark.measure(net, data)
    bench.state_dict, bench.test_losses = {"w": NoCopy()}, NoCopy()
    record = bench.header()
    assert "state_dict" not in record and "test_losses" not in record and record["n_test"] == 8
