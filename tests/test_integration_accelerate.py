"""The Accelerate adapter in-process, and the examples under `accelerate launch` with two processes."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

accelerate = pytest.importorskip("accelerate", reason="needs accelerate (a core dependency of advhooks)")
from accelerate import Accelerator  # noqa: E402
from accelerate.state import AcceleratorState, GradientState, PartialState  # noqa: E402
from accelerate.tracking import GeneralTracker  # noqa: E402

from advhooks import PGD  # noqa: E402
from advhooks.integrations.accelerate import AcceleratedAdversarialTraining  # noqa: E402
from advhooks.monitor import PhaseMonitor  # noqa: E402

from ._gloo import accelerate_launch_command  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


class ListTracker(GeneralTracker):
    """A real accelerate tracker that keeps what it is given."""

    name = "list"
    requires_logging_directory = False

    def __init__(self) -> None:
        super().__init__()
        self.logged: list[tuple[dict, int]] = []

    @property
    def tracker(self):
        return self.logged

    def store_init_configuration(self, values: dict) -> None:
        pass

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.logged.append((values, step))


@pytest.fixture
def accelerator():
    for state in (AcceleratorState, GradientState, PartialState):
        state._reset_state()
    tracker = ListTracker()
    acc = Accelerator(cpu=True, log_with=[tracker])
    acc.init_trackers("advhooks-test")
    yield acc, tracker
    acc.end_training()
    for state in (AcceleratorState, GradientState, PartialState):
        state._reset_state()


def _train(adv, model, opt, accelerator, epochs):
    gen = torch.Generator().manual_seed(0)
    reports = []
    for _ in range(epochs):
        for _ in range(3):
            x, y = torch.rand(16, 1, 4, 4, generator=gen), torch.randint(0, 3, (16,), generator=gen)
            out = adv(x, y)
            opt.zero_grad()
            accelerator.backward(out.loss)
            opt.step()
        reports.append(adv.epoch_end())
        if adv.should_stop():
            break
    return reports


def test_adapter_logs_checkpoints_and_stops(accelerator, tmp_path):
    acc, tracker = accelerator
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    model, opt = acc.prepare(model, opt)
    # R*(0) tiny: the loss stays far above it, so the flag fires after the warm-up and stops training.
    monitor = PhaseMonitor(0.01, eps=0.1, warmup_epochs=2, patience=1)
    adv = AcceleratedAdversarialTraining(acc, model, PGD(0.1, steps=2), monitor=monitor, stop_on_flag=True)
    reports = _train(adv, model, opt, acc, epochs=10)
    assert reports[-1].regime == "eps >> eps*" and len(reports) < 10
    assert [step for _, step in tracker.logged] == [r.epoch for r in reports]
    assert tracker.logged[-1][0]["advhooks/eps_far_above_eps_star"] == 1.0
    assert tracker.logged[0][0]["advhooks/ratio"] == pytest.approx(reports[0].ratio)

    adv.save_state(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "advhooks_state_0.json").exists()
    assert not list((tmp_path / "ckpt").glob("custom_checkpoint_*"))  # nothing of ours is pickled
    saved_monitor, saved_step = monitor.state_dict(), adv.step.state_dict()
    monitor.reset()
    adv.step.load_state_dict({"step": 0})
    loads = []
    original = torch.load

    def recording_load(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "load", recording_load)
        adv.load_state(tmp_path / "ckpt")
    assert monitor.state_dict() == saved_monitor and adv.step.state_dict() == saved_step
    assert loads and all(w is True for w in loads)  # Accelerate's own files: weights_only only


def test_register_for_checkpointing_hands_the_state_to_accelerate(accelerator, tmp_path):
    acc, _ = accelerator
    model, opt = acc.prepare(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)),
                             torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1))
    monitor = PhaseMonitor(0.5, eps=0.1)
    adv = AcceleratedAdversarialTraining(acc, model, PGD(0.1, steps=2), monitor=monitor,
                                         register_for_checkpointing=True)
    _train(adv, model, opt, acc, epochs=2)
    acc.save_state(str(tmp_path / "ckpt"))
    saved = adv.state_dict()
    monitor.reset()
    acc.load_state(str(tmp_path / "ckpt"))
    assert adv.state_dict() == saved


def test_load_state_says_when_the_advhooks_state_is_missing(accelerator, tmp_path):
    acc, _ = accelerator
    model = acc.prepare(torch.nn.Linear(2, 2))
    adv = AcceleratedAdversarialTraining(acc, model, PGD(0.1), monitor=PhaseMonitor(0.5))
    acc.save_state(str(tmp_path / "plain"))
    with pytest.raises(FileNotFoundError, match="advhooks_state_0.json is missing"):
        adv.load_state(tmp_path / "plain")


def test_adapter_rejects_bad_arguments(accelerator):
    acc, _ = accelerator
    model = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match="accelerate.Accelerator"):
        AcceleratedAdversarialTraining(object(), model, PGD(0.1))
    with pytest.raises(ValueError, match="stop_on_flag needs a monitor"):
        AcceleratedAdversarialTraining(acc, model, PGD(0.1), stop_on_flag=True)


def _launch(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run(accelerate_launch_command(*args, processes=processes), capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


def test_on_two_processes_the_epoch_mean_is_the_mean_over_every_real_sample_once(tmp_path):
    out = tmp_path / "monitor.json"
    proc = _launch(str(ROOT / "tests" / "scripts" / "accelerate_monitor.py"), str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["processes"] == 2
    # (the monitor adds float32 batch means, the recomputation float64 samples: equal to float32's precision)
    np.testing.assert_allclose(data["monitor"], data["recomputed"], rtol=1e-6)


def _cifar_example(processes: int, bench: pathlib.Path, report: pathlib.Path) -> subprocess.CompletedProcess:
    args = [str(ROOT / "examples" / "cifar_adv.py"), "--dataset", "digits", "--epochs", "10", "--steps", "3",
            "--batch-size", "128", "--benchmark", str(bench), "--report", str(report)]
    if processes == 1:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=ROOT)
    return _launch(*args, processes=processes)


def test_cifar_example_on_one_and_two_processes_same_schedule_samples_and_overlapping_bands(tmp_path):
    # The recipe of the docstring: a global batch of 128 for the benchmark and for every process count.
    bench = tmp_path / "clean.safetensors"
    subprocess.run([sys.executable, "-m", "advhooks.cli", "benchmark-clean", "--preset", "digits-mlp", "--epochs",
                    "10", "--batch-size", "128", "--out", str(bench), "-q"], check=True, capture_output=True,
                   timeout=300)
    runs = {}
    for processes in (1, 2):
        report = tmp_path / f"reports{processes}.json"
        proc = _cifar_example(processes, bench, report)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "differs from the clean benchmark" not in proc.stdout + proc.stderr  # no recipe warning
        assert "final: R-hat" in proc.stdout and "% of the training time" in proc.stdout
        runs[processes] = json.loads(report.read_text())
        assert runs[processes]["num_processes"] == processes
    one, two = runs[1]["reports"], runs[2]["reports"]
    assert [r["lr"] for r in one] == [r["lr"] for r in two]  # the epoch schedule is not sped up by 2 processes
    # Every training sample once per epoch: on 2 processes Accelerate pads the last global batch (even_batches) and
    # the adapter leaves the repeated samples out.
    assert one[-1]["samples"] == 1348 and two[-1]["samples"] == 1348
    for last in (one[-1], two[-1]):
        assert not last["provisional"] and last["rhat_kind"] == "fixed weights" and last["comparable"]
    (low1, high1), (low2, high2) = one[-1]["ratio_interval"], two[-1]["ratio_interval"]
    assert low1 <= high2 and low2 <= high1, (one[-1]["ratio_interval"], two[-1]["ratio_interval"])


def _write_tiny_cifar(root: pathlib.Path, per_batch: int = 40) -> None:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, (per_batch, 1))
        pixels = rng.integers(0, 256, (per_batch, 3072))
        np.concatenate([labels, pixels], axis=1).astype(np.uint8).tofile(folder / name)


def test_cifar_example_on_a_tiny_cifar10_folder(tmp_path):
    _write_tiny_cifar(tmp_path)
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "cifar_adv.py"), "--data-dir", str(tmp_path),
                           "--epochs", "1", "--steps", "1", "--batch-size", "100"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cifar10: 200 train / 40 test" in proc.stdout and "PGD-1 test accuracy" in proc.stdout
    assert "epoch   1  adv train loss" in proc.stdout  # one line per epoch, also without a benchmark


def test_cifar_example_without_data_says_where_to_put_it(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "cifar_adv.py"), "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2
    assert "cifar-10-batches-bin" in proc.stderr and "--download" in proc.stderr


def test_a_diverged_run_reads_diverged_and_sets_the_trigger(accelerator):
    acc, _ = accelerator
    model, opt = acc.prepare(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)),
                             torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1))
    adv = AcceleratedAdversarialTraining(acc, model, PGD(0.1, steps=2), stop_on_flag=True,
                                         monitor=PhaseMonitor(0.5, eps=0.1, warmup_epochs=0))
    assert _train(adv, model, opt, acc, epochs=1)[-1].regime != "diverged"
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    reports = _train(adv, model, opt, acc, epochs=3)  # (it stops when adv.should_stop(), which reads the trigger)
    assert len(reports) == 1 and reports[0].regime == "diverged" and reports[0].diverged_epoch == 2
