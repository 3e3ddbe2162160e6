"""The bad-input matrix of docs/bad-inputs.md: one test per row, Python API and CLI.

Every row names a bad input and what advhooks does with it: a ``ValueError``/``TypeError`` (or the
library's ``BenchmarkFormatError``) whose message names the problem, or, for inputs that are legal but
awkward (batch size 1, NaN losses in the monitor), the behaviour users can rely on. CLI rows exit with
code 2 and one line, never a traceback. ``test_the_docs_table_lists_every_row`` keeps the table and
this file in step.
"""

from __future__ import annotations

import math
import pickle
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from advhooks import APGD, AWP, FGM, PGD, AdversarialStep, linear_warmup, pgd_perturb
from advhooks.attacks import AttackConfig
from advhooks.attacks.fab import fab_targeted_perturb
from advhooks.attacks.graphs import GraphedAttack
from advhooks.attacks.square import square_perturb
from advhooks.benchmark import BenchmarkFormatError, CleanBenchmark, Recipe
from advhooks.cli import app
from advhooks.kit.checkpoints import load_weights
from advhooks.kit.data import UnsafePickleError, load_cifar10
from advhooks.kit.training import record_clean_benchmark
from advhooks.monitor import PhaseMonitor
from advhooks.robustness import SuiteAttack, robust_accuracy

from .conftest import SmallCNN

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"


def _sgd() -> torch.optim.SGD:
    return torch.optim.SGD(SmallCNN().parameters(), lr=0.1)


def _awp_step_without_grad():
    model = SmallCNN()
    step = AdversarialStep(model, PGD(0.1, steps=1), awp=AWP(torch.optim.SGD(model.parameters(), lr=0.1)))
    with torch.no_grad():
        step(_x(), _y())


def _x(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8)


def _y(n: int = 4) -> torch.Tensor:
    return torch.randint(0, 10, (n,))


def _attack(model: nn.Module | None = None, x: torch.Tensor | None = None, y: torch.Tensor | None = None, **kw):
    return PGD(8 / 255, steps=2, **kw)(model or SmallCNN(), _x() if x is None else x, _y() if y is None else y)


def _bench(tmp: Path) -> Path:
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    data = [(_x(8), _y(8))]
    return CleanBenchmark.measure(net, data, train_loader=data).save(tmp / "b.safetensors")


class _DictWithoutLogits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        return {"scores": self.net(x)}


def _pairs(n: int) -> torch.utils.data.TensorDataset:
    return torch.utils.data.TensorDataset(_x(n), _y(n))


def _accelerated(**kwargs):
    from accelerate import Accelerator

    from advhooks.integrations.accelerate import AcceleratedAdversarialTraining

    return AcceleratedAdversarialTraining(Accelerator(cpu=True), SmallCNN(), PGD(0.1), **kwargs)


class _Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


# -- Python API rows: id -> (call(tmp_path), expected exception, message pattern) -------------------------
API: dict[str, tuple[Callable[[Path], object], type[Exception], str]] = {
    "eps-negative": (lambda t: PGD(-0.1), ValueError, r"eps must be a finite number >= 0"),
    "eps-nan": (lambda t: PGD(math.nan), ValueError, r"eps must be a finite number >= 0"),
    "eps-not-a-number": (lambda t: PGD("8/255"), TypeError, r"eps must be a real number"),
    "eps-schedule-goes-bad": (lambda t: PGD(lambda s: 0.1 if s < 3 else -1.0, steps=1)(SmallCNN(), _x(), _y(),
                                                                                        step=3),
                              ValueError, r"eps schedule value at step 3"),
    "steps-zero": (lambda t: PGD(0.1, steps=0), ValueError, r"steps must be an integer >= 1"),
    "step-size-zero": (lambda t: PGD(0.1, step_size=0.0), ValueError, r"step_size must be a finite number > 0"),
    "norm-unknown": (lambda t: FGM(0.1, norm="l1"), ValueError, r"norm must be one of 'linf', 'l2'"),
    "bounds-inverted": (lambda t: PGD(0.1, bounds=(1.0, 0.0)), ValueError, r"bounds must satisfy low < high"),
    "normalization-zero-std": (lambda t: PGD(0.1, normalization=((0.5,), (0.0,))), ValueError,
                               r"normalization std must be > 0"),
    "bn-policy-unknown": (lambda t: PGD(0.1, bn="frozen"), ValueError, r"bn must be one of 'eval', 'train'"),
    "precision-unknown": (lambda t: PGD(0.1, precision="int8"), ValueError, r"precision must be one of"),
    "warmup-negative": (lambda t: linear_warmup(0.1, warmup_steps=-1), ValueError, r"warmup_steps"),
    "robustness-suite-unknown": (lambda t: robust_accuracy(SmallCNN(), _nan_set(), 0.1, suite="autoattack"),
                                 ValueError, r"suite must be one of 'standard', 'apgd', 'fast', 'rand', 'pgd'"),
    "square-no-queries": (lambda t: square_perturb(SmallCNN(), _x(), _y(), eps=0.1, n_queries=0), ValueError,
                          r"n_queries \(Square's query budget\) must be an integer >= 1"),
    "fab-one-class": (lambda t: fab_targeted_perturb(SmallCNN(num_classes=1), _x(), _y() * 0, _y() * 0, eps=0.1),
                      ValueError, r"FAB-T needs logits \(N, C\) with at least 2 classes"),
    "apgd-unknown-criterion": (lambda t: APGD(0.1, criterion="hinge"), ValueError,
                               r"criterion must be one of 'ce', 'dlr'"),
    "dlr-with-two-classes": (lambda t: APGD(0.1, steps=2, criterion="dlr")(SmallCNN(num_classes=2), _x(), _y() % 2),
                             ValueError, r"the DLR loss needs logits \(N, C\) with C >= 3 classes"),
    "objective-unknown": (lambda t: AdversarialStep(SmallCNN(), PGD(0.1), objective="fgsm"), ValueError,
                          r"objective must be one of"),
    "trades-without-random-start": (lambda t: AdversarialStep(SmallCNN(), PGD(0.1, random_start=False),
                                                              objective="trades"),
                                    ValueError, r"needs an attack with random_start=True"),
    "beta-for-plain-at": (lambda t: AdversarialStep(SmallCNN(), PGD(0.1), beta=6.0), ValueError,
                          r"beta applies to 'trades' and 'mart'"),
    "clean-fraction-out-of-range": (lambda t: AdversarialStep(SmallCNN(), PGD(0.1), clean_fraction=1.5),
                                    ValueError, r"clean_fraction"),
    "awp-gamma-not-positive": (lambda t: AWP(_sgd(), gamma=0.0), ValueError, r"gamma must be a finite number > 0"),
    "awp-gamma-nan": (lambda t: AWP(_sgd(), gamma=math.nan), ValueError, r"gamma must be a finite number > 0"),
    "awp-not-an-optimizer": (lambda t: AWP(object()), TypeError, r"AWP needs a torch.optim.Optimizer"),
    "awp-under-no-grad": (lambda t: _awp_step_without_grad(), ValueError, r"AWP needs gradients"),
    "inputs-integer": (lambda t: _attack(x=torch.zeros(4, 1, 8, 8, dtype=torch.long)), TypeError,
                       r"inputs must be a floating-point tensor"),
    "inputs-empty-batch": (lambda t: _attack(x=_x(0), y=_y(0)), ValueError, r"non-empty batch"),
    "inputs-nan": (lambda t: _attack(x=torch.full((4, 1, 8, 8), math.nan)), ValueError, r"inputs contain NaN or inf"),
    "inputs-inf-unbounded": (lambda t: _attack(x=torch.full((4, 1, 8, 8), math.inf), bounds=None), ValueError,
                             r"inputs contain NaN or inf"),
    "inputs-outside-bounds": (lambda t: _attack(x=_x() * 255), ValueError, r"inputs lie outside the attack's bounds"),
    "targets-length-mismatch": (lambda t: _attack(y=_y(3)), ValueError, r"targets has 3 rows but inputs has 4"),
    "labels-float": (lambda t: _attack(y=torch.rand(4)), TypeError, r"targets must be integer class labels"),
    "labels-out-of-range": (lambda t: _attack(y=torch.full((4,), 12)), ValueError,
                            r"class index outside \[0, 10\)"),
    "model-on-another-device": (lambda t: _attack(model=SmallCNN().to("meta")), ValueError,
                                r"inputs are on cpu but the model's parameters are on meta"),
    "model-dtype-mismatch": (lambda t: _attack(x=_x().double()), TypeError,
                             r"inputs are torch.float64 but the model's parameters are torch.float32"),
    "restarts-with-scalar-criterion": (
        lambda t: PGD(0.1, steps=1, restarts=2, criterion=lambda z, y: nn.functional.cross_entropy(z, y))(
            SmallCNN(), _x(), _y()), ValueError, r"one loss per sample"),
    "dict-batch-without-input-key": (lambda t: AdversarialStep(SmallCNN(), PGD(0.1))({"pixel_values": _x()}),
                                     ValueError, r"dict batches need input_key"),
    "tensor-batch-without-targets": (lambda t: AdversarialStep(SmallCNN(), PGD(0.1))(_x()), ValueError,
                                     r"targets are required"),
    "monitor-threshold-not-above-1": (lambda t: PhaseMonitor(0.2, threshold=1.0), ValueError,
                                      r"threshold must be > 1"),
    "monitor-benchmark-wrong-type": (lambda t: PhaseMonitor([0.2]), TypeError, r"benchmark must be a CleanBenchmark"),
    "monitor-eps-star-without-band": (lambda t: PhaseMonitor(0.2, eps_star={"value": 0.03, "interval": None}),
                                      ValueError, r"eps_star must be an eps\* estimate with a value and a band"),
    "monitor-epoch-end-without-update": (lambda t: PhaseMonitor(0.2).epoch_end(), ValueError,
                                         r"before any update"),
    "monitor-bare-loss-without-batch-size": (lambda t: PhaseMonitor(0.2).update(torch.tensor(0.5)), ValueError,
                                             r"batch_size is required"),
    "monitor-state-from-another-benchmark": (
        lambda t: PhaseMonitor(0.2).load_state_dict(PhaseMonitor(0.3).state_dict()), ValueError,
        r"recorded against R\*\(0\) = 0.3"),
    "model-output-without-logits": (lambda t: PGD(0.1)(_DictWithoutLogits(), _x(), _y()), ValueError,
                                    r"cannot find logits in the model output"),
    "monitor-strict-model-mismatch": (
        lambda t: PhaseMonitor(_bench(t), strict=True).evaluate_with(SmallCNN(), _pairs(8), _pairs(8)), ValueError,
        r"differ in model or data, so R-hat / R\*\(0\) would compare unlike things \(strict=True\)"),
    "monitor-budget-not-positive": (lambda t: PhaseMonitor(0.2).evaluate_with(SmallCNN(), _pairs(8), budget=0),
                                    ValueError, r"budget must be a share of the training passes > 0"),
    "monitor-selection-steps-zero": (
        lambda t: PhaseMonitor(0.2).evaluate_with(SmallCNN(), _pairs(8), selection_steps=0), ValueError,
        r"selection_steps must be an integer >= 1"),
    "monitor-strict-not-a-bool": (lambda t: PhaseMonitor(0.2, strict="yes"), TypeError,
                                  r"strict must be True or False"),
    "adapter-eval-options-unknown": (
        lambda t: _accelerated(monitor=PhaseMonitor(0.2), eval_data=(_pairs(8), _pairs(8)),
                               eval_options={"budjet": 0.1}), ValueError,
        r"eval_options: unknown \['budjet'\]; evaluate_with takes"),
    "accelerate-eval-data-without-monitor": (lambda t: _accelerated(eval_data=(_pairs(8), _pairs(8))), ValueError,
                                             r"eval_data needs a monitor"),
    "benchmark-missing-file": (lambda t: CleanBenchmark.load(t / "none.safetensors"), FileNotFoundError,
                               r"none.safetensors"),
    "benchmark-truncated": (lambda t: CleanBenchmark.load(_truncated(t)), BenchmarkFormatError, r"truncated"),
    "benchmark-pickle": (lambda t: CleanBenchmark.load(_pickled(t)), BenchmarkFormatError,
                         r"not a safetensors file"),
    "benchmark-weights-for-another-model": (lambda t: CleanBenchmark.load(_bench(t)).load_weights_into(SmallCNN()),
                                            ValueError, r"model does not match the benchmark's"),
    "eps-wider-than-bounds": (lambda t: PGD(8), ValueError, r"eps=8 is larger than the bounds' range 1.*8/255"),
    "eps-wider-than-bounds-functional": (lambda t: pgd_perturb(SmallCNN(), _x(), _y(), eps=8), ValueError,
                                         r"did you mean eps=8/255"),
    "eps-per-channel": (lambda t: PGD(torch.tensor([0.12, 0.13, 0.12])), TypeError,
                        r"per-channel eps .* normalization=\(mean, std\)"),
    "benchmark-nan-data": (lambda t: record_clean_benchmark(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)),
                                                            _nan_set(), _nan_set(), recipe=Recipe(epochs=2)),
                           ValueError, r"clean training loss became nan in epoch 1"),
    "benchmark-measure-nan": (lambda t: CleanBenchmark.measure(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)),
                                                               [(_nan_x(), _y(8))]),
                              ValueError, r"the clean loss is nan for 1 of 8 samples"),
    "benchmark-save-nan": (lambda t: _nan_record(t), ValueError, r"refusing to save a benchmark whose R\*\(0\) is nan"),
    "checkpoint-for-another-model": (lambda t: load_weights(SmallCNN(), {"module.w": torch.zeros(1)}, "ckpt.pt"),
                                     ValueError, r"ckpt.pt does not fit the model \(after removing the wrapper "
                                                 r"prefix 'module.'"),
    "cuda-graph-without-cuda": (lambda t: PGD(8 / 255, cuda_graph=True), ValueError,
                                r"cuda_graph=True needs a CUDA device"),
    "cuda-graph-on-cpu-inputs": (lambda t: GraphedAttack()(SmallCNN(), _x(), _y(), AttackConfig(0.1, steps=1)),
                                 ValueError, r"cuda_graph=True needs CUDA inputs, got inputs on cpu"),
    "records-of-another-benchmark": (lambda t: _records_of_another_benchmark(t), ValueError,
                                     r"measured against another benchmark: clean_test_loss"),
    "records-running-mean": (lambda t: _records_with_a_running_mean(t), ValueError,
                             r"holds a running mean R-hat, not R-hat at theta-hat's fixed weights: record runs with "
                             r"monitor.evaluate_with"),
    "monitor-test-loss-negative": (lambda t: _epoch_end_given(-0.5), ValueError,
                                   r"adv_test_loss must be a loss \(>= 0, or NaN/inf for a diverged run\)"),
    "finetune-ladder-that-cannot-grow": (lambda t: _finetune_with_growth(t, 1.0), ValueError,
                                         r"growth must be > 1, got 1"),
    "estimate-settings-of-another-method": (lambda t: _grid_with_finetune_settings(t), TypeError,
                                            r"method 'grid' takes GridSettings, got FinetuneSettings"),
    "estimate-unknown-training-attack": (lambda t: _finetune_settings(attack="apgd"), ValueError,
                                         r"attack must be PGD or FGM \(or 'pgd' / 'fgm'\), got 'apgd'"),
    "cifar-python-pickle-payload": (lambda t: load_cifar10(_cifar_payload(t)), UnsafePickleError,
                                    r"refusing to unpickle .*only numpy arrays are allowed"),
}


def _no_model() -> nn.Module:
    raise AssertionError("the settings are refused before any model is made")


def _finetune_settings(**given):
    from advhooks.kit.estimate import FinetuneSettings

    return FinetuneSettings(**given)


def _finetune_with_growth(tmp: Path, growth: float) -> None:
    from advhooks.kit.estimate import EstimationData, estimate_finetune

    estimate_finetune(_no_model, EstimationData(_nan_set()), CleanBenchmark.load(_bench(tmp)), [0.01],
                      _finetune_settings(growth=growth))


def _grid_with_finetune_settings(tmp: Path) -> None:
    from advhooks.kit.estimate import EstimationData, FinetuneSettings, estimate_eps_star

    estimate_eps_star("grid", CleanBenchmark.load(_bench(tmp)), _no_model, EstimationData(_nan_set(), _nan_set()),
                      FinetuneSettings())


def _records_of_another_benchmark(tmp: Path) -> None:
    from advhooks.kit.estimate import estimate_from_records

    mine, other = CleanBenchmark.load(_bench(tmp)), PhaseMonitor(0.123, eps=0.01)
    other.update(torch.tensor(0.2), batch_size=4)
    other.epoch_end(adv_test_loss=0.3)
    estimate_from_records([other.record()], mine)


def _records_with_a_running_mean(tmp: Path) -> None:
    from advhooks.kit.estimate import estimate_from_records

    bench = CleanBenchmark.load(_bench(tmp))
    monitor = PhaseMonitor(bench, eps=0.01)  # no evaluate_with: θ̂'s R̂ stays its running mean
    monitor.update(torch.tensor(0.2), batch_size=4)
    monitor.epoch_end(adv_test_loss=0.3)
    estimate_from_records([monitor.record()], bench)


def _epoch_end_given(loss: float) -> None:
    monitor = PhaseMonitor(0.2)
    monitor.update(torch.tensor(0.2), batch_size=4)
    monitor.epoch_end(adv_test_loss=loss)


def _cifar_payload(tmp: Path) -> Path:
    folder = tmp / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps(_Payload(str(tmp / "pwned")), protocol=2))
    return tmp


def _nan_x() -> torch.Tensor:
    x = _x(8)
    x[3, 0, 2, 2] = math.nan
    return x


def _nan_set() -> torch.utils.data.TensorDataset:
    return torch.utils.data.TensorDataset(_nan_x(), _y(8))


def _nan_record(tmp: Path) -> None:
    bench = CleanBenchmark.load(_bench(tmp))
    bench.clean_test_loss = math.nan
    bench.save(tmp / "nan.safetensors")


def _truncated(tmp: Path) -> Path:
    path = _bench(tmp)
    path.write_bytes(path.read_bytes()[:-40])
    return path


def _pickled(tmp: Path) -> Path:
    path = tmp / "evil.safetensors"
    path.write_bytes(pickle.dumps(_Payload(str(tmp / "pwned"))))
    return path


# -- behaviour rows: legal but awkward inputs ---------------------------------------------------------------
def _batch_of_one(tmp: Path) -> None:
    model = SmallCNN().eval()
    x, y = _x(1), _y(1)
    adv = PGD(8 / 255, steps=2)(model, x, y)
    assert adv.shape == x.shape and (adv - x).abs().max() <= 8 / 255 + 1e-6
    out = AdversarialStep(model, PGD(8 / 255, steps=2), objective="trades")(x, y)
    assert torch.isfinite(out.loss)


def _monitor_nan_losses(tmp: Path) -> None:
    monitor = PhaseMonitor(0.5, warmup_epochs=1)
    monitor.update(torch.tensor(1.0), batch_size=10)
    monitor.update(torch.tensor(math.nan), batch_size=5)
    monitor.update(torch.tensor(math.inf), batch_size=5)
    report = monitor.epoch_end()
    assert report.adv_train_loss == 1.0 and report.ratio == 2.0  # not poisoned
    assert report.samples == 10 and report.nonfinite_samples == 10 and "NaN/inf" in report.explanation
    monitor.update(torch.tensor(math.nan), batch_size=5)
    diverged = monitor.epoch_end()  # an epoch with no finite loss: recorded as NaN, history kept, no verdict
    assert math.isnan(diverged.adv_train_loss) and math.isnan(monitor.running_ratios[-1])
    assert diverged.ratio == 2.0 and diverged.best_running_ratio == 2.0 and diverged.best_epoch == 1  # the best finite
    assert diverged.regime == "diverged" and diverged.diverged_epoch == 2 and diverged.should_stop
    monitor.update(torch.tensor(0.25), batch_size=10)
    assert monitor.epoch_end().regime == "clean-like"


def _normalization_on_pixel_inputs(tmp: Path) -> None:
    attack = PGD(8 / 255, steps=1, normalization=((0.5,), (0.25,)))
    with pytest.warns(UserWarning, match="every input of the first batch is >= 0: are the inputs still in pixel"):
        attack(SmallCNN(), _x(), _y())
    with warnings.catch_warnings():  # once: the first batch only
        warnings.simplefilter("error")
        attack(SmallCNN(), _x(), _y())
        PGD(8 / 255, steps=1, normalization=((0.5,), (0.25,)))(SmallCNN(), (_x() - 0.5) / 0.25, _y())


def _rand_suite_on_a_deterministic_model(tmp: Path) -> None:
    data = torch.utils.data.TensorDataset(_x(), _y())
    with pytest.warns(UserWarning, match="the rand suite averages each gradient over 20 draws .* the draws are wasted"):
        report = robust_accuracy(SmallCNN(), data, 0.05, suite=[SuiteAttack("apgd-ce-eot", "apgd-ce", 2, eot=20)])
    assert report.n == 4  # it warns, then evaluates


def _criterion_drives_the_attack(tmp: Path) -> None:
    seen = []

    def criterion(logits, y):
        seen.append(logits.requires_grad)
        return nn.functional.cross_entropy(logits, y, reduction="none", label_smoothing=0.1)

    AdversarialStep(SmallCNN(), PGD(8 / 255, steps=3), criterion=criterion)(_x(), _y())
    assert len(seen) == 3 + 1  # three attack iterations maximise it, then the training loss uses it
    seen.clear()
    own = PGD(8 / 255, steps=3, criterion=lambda z, y: nn.functional.cross_entropy(z, y, reduction="none"))
    AdversarialStep(SmallCNN(), own, criterion=criterion)(_x(), _y())
    assert len(seen) == 1  # an attack built with its own criterion keeps it


def _evaluation_keeps_the_schedule(tmp: Path) -> None:
    step = AdversarialStep(SmallCNN(), PGD(linear_warmup(8 / 255, 10), steps=1))
    step(_x(), _y())
    out = step(_x(), _y(), advance=False)
    assert step.step == 1 and out.eps == pytest.approx(8 / 255 / 10)


def _checkpoint_from_a_wrapper(tmp: Path) -> None:
    source = SmallCNN()
    for prefix in ("module.", "_orig_mod.", "module._orig_mod."):
        target = load_weights(SmallCNN(), {prefix + k: v for k, v in source.state_dict().items()})
        assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values(),
                                                      strict=True))


def _monitor_diverged(tmp: Path) -> None:
    monitor = PhaseMonitor(0.5, warmup_epochs=0)
    for given in (0.6, 0.5, math.nan, math.inf):
        monitor.update(torch.tensor(0.4), batch_size=10)
        report = monitor.epoch_end(adv_test_loss=given)  # recorded, not raised
    assert report.regime == "diverged" and report.diverged_epoch == 3 and report.should_stop
    assert report.early_stopped_epoch == 2 and monitor.record()["diverged_epoch"] == 3  # never a NaN θ̂


def _monitor_not_learning(tmp: Path) -> None:
    bench = CleanBenchmark(0.2, 0.1, 0.1, 0.9, 0.95, test_loss_stderr=0.01, n_test=400, n_train=1000,
                           dataset={"num_classes": 10})
    collapsed = nn.Linear(4, 10)  # the same output for every input: R̂ and the clean loss are ln 10
    nn.init.zeros_(collapsed.weight), nn.init.zeros_(collapsed.bias)
    data = torch.utils.data.TensorDataset(torch.rand(32, 4), torch.randint(0, 10, (32,)))
    monitor = PhaseMonitor(bench, warmup_epochs=0)
    monitor.evaluate_with(collapsed, data, data, attack=PGD(0.1, steps=2, bounds=None))
    monitor.update(torch.tensor(math.log(10)), batch_size=10)
    report = monitor.epoch_end()
    assert report.regime == "not learning" and "ln 10" in report.explanation and not report.should_stop


def _records_of_unhealthy_runs(tmp: Path) -> None:
    from advhooks.kit.estimate import estimate_from_records

    bench = CleanBenchmark.load(_bench(tmp))
    records = []
    for eps, given, poison in ((0.01, 0.8 * bench.clean_test_loss, False), (0.02, 0.9 * bench.clean_test_loss, True),
                               (0.03, 1.5 * bench.clean_test_loss, False)):
        monitor = PhaseMonitor(bench, eps=eps, warmup_epochs=0)
        for epoch_loss in (given, math.nan if poison else given):
            monitor.update(torch.tensor(given), batch_size=10)
            monitor.epoch_end(adv_test_loss=epoch_loss)
        record = monitor.record()
        record["rhat"].update(kind="fixed weights")
        records.append(record)
    est = estimate_from_records(records, bench, include_clean=False)
    assert [p.get("failed", "")[:8] for p in est.points] == ["", "diverged", ""]
    assert any("is left out: diverged" in w for w in est.warnings)


def _run_shorter_than_the_warmup(tmp: Path) -> None:
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("advhooks.monitor")
    logger.addHandler(handler)
    try:
        PhaseMonitor(0.2, total_epochs=6)
    finally:
        logger.removeHandler(handler)
    assert any("shorter than the monitor's warm-up (8 epochs)" in r.getMessage() for r in records)


BEHAVIOUR: dict[str, Callable[[Path], None]] = {
    "batch-size-1": _batch_of_one,
    "monitor-nan-losses": _monitor_nan_losses,
    "normalization-on-pixel-inputs": _normalization_on_pixel_inputs,
    "rand-suite-deterministic-model": _rand_suite_on_a_deterministic_model,
    "step-criterion-drives-the-attack": _criterion_drives_the_attack,
    "evaluation-keeps-the-eps-schedule": _evaluation_keeps_the_schedule,
    "checkpoint-from-a-wrapper": _checkpoint_from_a_wrapper,
    "monitor-run-shorter-than-warmup": _run_shorter_than_the_warmup,
    "monitor-diverged": _monitor_diverged,
    "monitor-not-learning": _monitor_not_learning,
    "records-of-unhealthy-runs": _records_of_unhealthy_runs,
}

# -- CLI rows: id -> (arguments, message); exit code 2, one line --------------------------------------------
CLI: dict[str, tuple[list[str], str]] = {
    "cli-no-preset-or-factories": (["benchmark-clean"], "give --preset"),
    "cli-unknown-preset": (["benchmark-clean", "--preset", "imagenet"], "preset must be one of"),
    "cli-evaluate-unknown-suite": (["evaluate", "--checkpoint", "{tmp}/plain.safetensors", "--preset", "digits-cnn",
                                    "--suite", "autoattack"], "--suite must be one of standard, apgd, fast, rand, pgd"),
    "cli-factory-module-missing": (["benchmark-clean", "--model", "nosuchmod:f", "--data", "nosuchmod:g"],
                                   "cannot import module"),
    "cli-factory-path-malformed": (["benchmark-clean", "--model", "advhooks.kit.models", "--data", "x:y"],
                                   "package.module:function"),
    "cli-factory-attribute-missing": (["benchmark-clean", "--model", "advhooks.kit.models:Nope", "--data",
                                       "advhooks.kit.data:load_digits"], "has no callable"),
    "cli-epochs-zero": (["benchmark-clean", "--preset", "digits-mlp", "--epochs", "0"], "--epochs must be >= 1"),
    "cli-dataset-missing": (["benchmark-clean", "--preset", "mnist-cnn", "--data-dir", "{tmp}"], "MNIST not found"),
    "cli-mnist1d-without-extra": (["benchmark-clean", "--preset", "mnist1d-mlp"],
                                  "MNIST-1D is generated by the mnist1d package: pip install 'advhooks[bench]'"),
    "cli-checkpoint-missing": (["benchmark-clean", "--preset", "digits-mlp", "--checkpoint", "{tmp}/none.pt"],
                               "checkpoint not found"),
    "cli-checkpoint-pickle": (["benchmark-clean", "--preset", "digits-mlp", "--checkpoint", "{tmp}/evil.pt",
                               "--out", "{tmp}/o.safetensors"], "error"),
    "cli-show-missing-file": (["show", "{tmp}/missing.safetensors"], "missing.safetensors"),
    "cli-show-plain-safetensors": (["show", "{tmp}/plain.safetensors"], "not an advhooks clean benchmark"),
    "cli-show-corrupt-file": (["show", "{tmp}/corrupt.safetensors"], "not a safetensors file"),
    "cli-show-pickle": (["show", "{tmp}/evil.safetensors"], "not a safetensors file"),
    "cli-estimate-bad-method": (["estimate-eps-star", "--benchmark", "{tmp}/digits.safetensors", "--method", "magic"],
                                "--method must be grid, finetune, clean-probe or records"),
    "cli-estimate-bad-eps": (["estimate-eps-star", "--benchmark", "{tmp}/digits.safetensors", "--eps", "abc"],
                             "eps"),
    "cli-estimate-verify-without-finetune": (["estimate-eps-star", "--benchmark", "{tmp}/digits.safetensors",
                                              "--method", "grid", "--verify"],
                                             "--verify checks a --method finetune estimate"),
    "cli-estimate-fingerprint-mismatch": (["estimate-eps-star", "--benchmark", "{tmp}/digits.safetensors",
                                           "--preset", "digits-mlp", "--width", "8", "--strict"],
                                          "the benchmark was recorded on something else"),
    "cli-simulate-bad-dimensions": (["simulate-linear", "--d", "2,x"], "--d must be comma-separated integers"),
    "cli-out-under-a-file": (["benchmark-clean", "--preset", "digits-mlp", "--out", "{tmp}/plain.safetensors/b.st"],
                             "plain.safetensors is a file, not a folder"),
    "cli-json-in-a-read-only-folder": (["estimate-eps-star", "--benchmark", "{tmp}/digits.safetensors", "--json",
                                        "/proc/self/e.json"], "--json /proc/self/e.json: cannot write in /proc/self"),
    "cli-plot-under-a-file": (["simulate-linear", "--plot", "{tmp}/plain.safetensors/fig.png"], "is a file"),
    "cli-demo-out-is-a-file": (["demo", "--out", "{tmp}/plain.safetensors"], "is a file, not a folder"),
    "cli-checkpoint-for-another-model": (["benchmark-clean", "--preset", "digits-cnn", "--checkpoint",
                                          "{tmp}/digits.safetensors", "--out", "{tmp}/o.safetensors"],
                                         "does not fit the model"),
    "cli-normalize-odd-count": (["estimate-eps-star", "--benchmark", "{tmp}/digits.safetensors", "--normalize",
                                 "0.5,0.5,0.2"], "--normalize needs as many stds as means"),
    "cli-device-unknown": (["benchmark-clean", "--preset", "digits-mlp", "--device", "tpu"], "--device must be"),
    "cli-records-without-method-records": (["estimate-eps-star", "--benchmark", "{tmp}/digits.safetensors", "--records",
                                         "{tmp}/*.json"], "--records goes with --method records"),
    "cli-split-not-the-benchmarks": (["estimate-eps-star", "--benchmark", "{tmp}/digits.safetensors",
                                      "--split-seed", "1"], "the data is not the benchmark's"),
    "cli-benchmark-nan-data": (["benchmark-clean", "--model", "tests.cli_factories:mlp", "--data",
                                "tests.cli_factories:data_with_a_nan", "--epochs", "1", "--out", "{tmp}/n.st"],
                               "the clean training loss became nan in epoch 1"),
}


@pytest.mark.parametrize("row", list(API))
def test_api_row(row, tmp_path):
    call, error, pattern = API[row]
    with pytest.raises(error, match=pattern):
        call(tmp_path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("row", list(BEHAVIOUR))
def test_behaviour_row(row, tmp_path):
    BEHAVIOUR[row](tmp_path)


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory) -> Path:
    from safetensors.torch import save_file

    from advhooks.kit.data import load_digits
    from advhooks.kit.presets import get_preset
    from advhooks.kit.training import record_clean_benchmark

    tmp = tmp_path_factory.mktemp("cli")
    save_file({"w": torch.zeros(1)}, str(tmp / "plain.safetensors"))
    (tmp / "corrupt.safetensors").write_bytes(b"\xff" * 64)
    for name in ("evil.safetensors", "evil.pt"):
        (tmp / name).write_bytes(pickle.dumps(_Payload(str(tmp / "pwned"))))
    preset = get_preset("digits-mlp")
    train, test = load_digits(seed=0)
    bench = record_clean_benchmark(preset.model(), train, test, recipe=preset.recipe.with_given(epochs=1))
    bench.training["preset"] = "digits-mlp"
    bench.save(tmp / "digits.safetensors")
    return tmp


# Rows whose bad input only training can reveal (a NaN in the data shows in the first epoch's loss).
FOUND_BY_TRAINING = {"cli-benchmark-nan-data"}
# Rows run as if an optional package were not installed (CI installs every extra).
WITHOUT_PACKAGE = {"cli-mnist1d-without-extra": ("mnist1d", "mnist1d.data")}


@pytest.mark.parametrize("row", list(CLI))
def test_cli_row(row, cli_files):
    args, message = CLI[row]
    def no_training(*args, **kwargs):  # a bad argument must be refused before the work, not after it
        raise AssertionError("training started before the bad argument was refused")

    with pytest.MonkeyPatch.context() as mp:
        if row not in FOUND_BY_TRAINING:
            mp.setattr(torch.optim.SGD, "step", no_training)
        for module in WITHOUT_PACKAGE.get(row, ()):
            mp.setitem(sys.modules, module, None)  # importing it raises ImportError
        result = CliRunner().invoke(app, [a.replace("{tmp}", str(cli_files)) for a in args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output
    assert not (cli_files / "pwned").exists()


def test_the_docs_table_lists_every_row():
    documented = re.findall(r"^\| `([a-z0-9-]+)` \|", DOC.read_text(), flags=re.M)
    assert sorted(documented) == sorted([*API, *BEHAVIOUR, *CLI])
    assert len(documented) >= 30
