"""The budget training modes in a real loop with the PhaseMonitor and the catastrophic-overfitting detector.

FGSM-RS (``FGM(eps, random_start=True)``), FGSM-RS with GradAlign and free adversarial training train
the digits MLP for a few epochs; the monitor reports every epoch over every sample it was given, and
the detector measures PGD and FGSM accuracy on a fixed held-out batch each epoch.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from advhooks import FGM, AdversarialStep
from advhooks.diagnostics import CatastrophicOverfittingDetector
from advhooks.free import FreeAdversarialStep
from advhooks.kit.data import load_digits
from advhooks.kit.presets import get_preset
from advhooks.monitor import PhaseMonitor

EPS = 8 / 255
EPOCHS = 3


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


@pytest.mark.parametrize("mode", ["fgsm-rs", "fgsm-rs+gradalign", "free"])
def test_budget_mode_feeds_the_monitor_and_the_detector(mode, digits):
    train, test = digits
    torch.manual_seed(0)
    model = get_preset("digits-mlp").model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    monitor = PhaseMonitor(0.0855, eps=EPS, warmup_epochs=1)
    x_probe, y_probe = test.tensors[0][:256], test.tensors[1][:256]
    detector = CatastrophicOverfittingDetector(x_probe, y_probe, eps=EPS, pgd_steps=5)
    if mode == "free":
        free = FreeAdversarialStep(model, EPS, replays=2)
    else:
        step = AdversarialStep(model, FGM(EPS, random_start=True), grad_align=0.2 if "gradalign" in mode else 0.0)
    reports, detections = [], []
    for _ in range(EPOCHS):
        model.train()
        for x, y in loader:
            for out in (free.replays(x, y) if mode == "free" else [step(x, y)]):
                opt.zero_grad()
                out.loss.backward()
                opt.step()
                monitor.update(out)
        reports.append(monitor.epoch_end())
        detections.append(detector.epoch_end(model))
    replays = 2 if mode == "free" else 1
    assert [r.epoch for r in reports] == [1, 2, 3]
    assert all(r.samples == replays * len(train) and math.isfinite(r.ratio) for r in reports)
    assert reports[-1].adv_train_loss < reports[0].adv_train_loss  # it trains
    assert all(0.0 <= d.pgd_accuracy <= d.fgsm_accuracy + 0.02 <= 1.02 for d in detections)
    assert detections[-1].pgd_accuracy > 0.5 and not any(d.flagged for d in detections)
