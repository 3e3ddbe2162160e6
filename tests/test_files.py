"""Benchmark files under attack: fuzzed bytes and records, pickles, and a writer killed mid-write.

The reader must return a record or raise :class:`BenchmarkFormatError` (never another exception, never
hang, never execute anything). The fuzz runs a small default profile; ``pytest -m slow`` runs the large one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from advhooks.benchmark import BenchmarkFormatError, CleanBenchmark, read_header

FUZZ_DEFAULT = 150
FUZZ_SLOW = 5000
_SETTINGS = dict(deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                 database=None)


def _valid_bytes(tmp: Path) -> bytes:
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    data = [(torch.rand(8, 4), torch.randint(0, 3, (8,)))]
    bench = CleanBenchmark.measure(net, data, train_loader=data)
    return bench.save(tmp / "valid.safetensors").read_bytes()


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory) -> bytes:
    return _valid_bytes(tmp_path_factory.mktemp("valid"))


def _mutations() -> st.SearchStrategy:
    """(kind, position, payload) edits: truncate, overwrite, insert, or set the header length."""
    return st.lists(st.tuples(st.sampled_from(["truncate", "overwrite", "insert", "header_length"]),
                              st.floats(0.0, 1.0), st.binary(min_size=1, max_size=16)), min_size=1, max_size=4)


def _mutate(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for kind, where, payload in edits:
        pos = int(where * len(out))
        if kind == "truncate":
            del out[pos:]
        elif kind == "overwrite":
            out[pos:pos + len(payload)] = payload
        elif kind == "insert":
            out[pos:pos] = payload
        else:
            out[:8] = int.from_bytes(payload[:8].ljust(8, b"\0"), "little").to_bytes(8, "little")
    return bytes(out)


def _read_both(path: Path) -> None:
    """Both readers: a record (or benchmark) back, or the library's own error."""
    for reader in (read_header, CleanBenchmark.read, CleanBenchmark.load):
        try:
            reader(path)
        except BenchmarkFormatError:
            pass


def _fuzz_bytes(valid: bytes, tmp: Path, edits) -> None:
    path = tmp / "fuzz.safetensors"
    path.write_bytes(_mutate(valid, edits))
    _read_both(path)


def _fuzz_record(tmp: Path, record) -> None:
    path = tmp / "record.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt", "advhooks.record": record})
    _read_both(path)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_FIELDS = ["clean_test_loss", "clean_test_accuracy", "n_test", "n_train", "best_epoch", "schema_version",
           "dataset", "model", "training", "criterion", "test_loss_stderr"]


def _records() -> st.SearchStrategy:
    """Valid-JSON records around the real schema, with wrong types and values mixed in, and raw text."""
    base = {"clean_test_loss": 0.5, "clean_test_accuracy": 0.9, "n_test": 8, "schema_version": 1}
    edits = st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=4)
    structured = edits.map(lambda e: json.dumps({**base, **e}))
    return structured | st.text(max_size=40) | _json.map(json.dumps)


def _fuzz(strategy: st.SearchStrategy, check: Callable[[object], None], n: int) -> None:
    seen = []

    def counted(value: object) -> None:
        check(value)
        seen.append(value)

    given(strategy)(settings(max_examples=n, **_SETTINGS)(counted))()
    assert len(seen) >= n


def test_fuzzed_bytes_never_escape_the_library_error(valid_file, tmp_path):
    _fuzz(_mutations(), lambda edits: _fuzz_bytes(valid_file, tmp_path, edits), FUZZ_DEFAULT)


def test_fuzzed_records_never_escape_the_library_error(tmp_path):
    _fuzz(_records(), lambda record: _fuzz_record(tmp_path, record), FUZZ_DEFAULT)


@pytest.mark.slow
def test_fuzz_large(valid_file, tmp_path):
    _fuzz(_mutations(), lambda edits: _fuzz_bytes(valid_file, tmp_path, edits), FUZZ_SLOW)
    _fuzz(_records(), lambda record: _fuzz_record(tmp_path, record), FUZZ_SLOW)


def test_every_truncation_is_refused(valid_file, tmp_path):
    path = tmp_path / "cut.safetensors"
    step = max(1, len(valid_file) // 200)
    for end in range(0, len(valid_file), step):
        path.write_bytes(valid_file[:end])
        with pytest.raises(BenchmarkFormatError):
            CleanBenchmark.load(path)


WRITER = r"""
import sys, time, torch
import advhooks.benchmark.file_format as file_format
from advhooks.benchmark import CleanBenchmark

path = sys.argv[1]
write = file_format.save_file
def half_a_write(tensors, filename, metadata=None):  # the second save stops half-way and waits to be killed
    with open(filename, "wb") as fh:
        fh.write(b"\x00" * 64)
    print("mid-write", flush=True)
    time.sleep(600)

for i, save in enumerate((write, half_a_write), start=1):
    file_format.save_file = save
    bench = CleanBenchmark(clean_test_loss=float(i), clean_train_loss=None, generalization_gap=None,
                           clean_test_accuracy=0.5, clean_train_accuracy=None, test_loss_stderr=0.0, n_test=1,
                           n_train=None, state_dict={"w": torch.full((1000,), float(i))})
    bench.save(path)
    print(i, flush=True)
"""


def test_a_writer_killed_mid_write_leaves_the_previous_file_intact(tmp_path):
    target = tmp_path / "bench.safetensors"
    # The child stops half-way through its second write and waits there: the kill lands mid-write every time.
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "1"  # one complete file exists
        assert proc.stdout.readline().strip() == "mid-write"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    bench = CleanBenchmark.load(target)
    assert bench.clean_test_loss == 1.0 and torch.equal(bench.state_dict["w"], torch.full((1000,), 1.0))
    leftovers = list(tmp_path.glob(".bench.safetensors.*.tmp"))
    assert len(leftovers) == 1  # the partial write stayed in its temporary file


def test_a_file_written_atomically_has_the_mode_an_open_would_give(tmp_path):
    import os

    from advhooks._files import write_json_atomic

    umask = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "record.json", {"a": 1})
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.glob(".record.json.*"))
