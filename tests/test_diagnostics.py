"""Catastrophic and robust overfitting diagnostics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advhooks.diagnostics import CatastrophicOverfittingDetector, RobustOverfittingTracker, catastrophic_overfitting


@pytest.mark.parametrize("pgd,fgsm,expected", [
    ([0.4, 0.45, 0.02], [0.5, 0.55, 0.9], True),  # PGD collapses, FGSM soars
    ([0.4, 0.45, 0.44], [0.5, 0.55, 0.56], False),  # healthy
    ([0.4, 0.45, 0.1], [0.5, 0.5, 0.15], False),  # both fall: a harder attack, not CO
    ([0.02], [0.9], False),  # never robust in the first place: nothing collapsed
])
def test_catastrophic_overfitting_decision(pgd, fgsm, expected):
    assert catastrophic_overfitting(pgd, fgsm) is expected


def test_detector_measures_a_real_model_and_restores_from_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x, y = torch.rand(32, 1, 2, 2), torch.randint(0, 2, (32,))
    det = CatastrophicOverfittingDetector(x, y, eps=0.1)
    report = det.epoch_end(model)
    assert not report.flagged and 0 <= report.pgd_accuracy <= report.fgsm_accuracy + 1e-9 <= 1 + 1e-9
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).double().mean().item()
    assert report.fgsm_accuracy <= clean + 1e-9
    other = CatastrophicOverfittingDetector(x, y, eps=0.1)
    other.load_state_dict(det.state_dict())
    assert other.pgd_accuracy == det.pgd_accuracy and other.flag_epoch is None
    with pytest.raises(ValueError):
        CatastrophicOverfittingDetector(x, y[:3], eps=0.1)


def test_detector_on_synthetic_histories():
    det = CatastrophicOverfittingDetector(torch.rand(4, 1, 2, 2), torch.zeros(4, dtype=torch.long), eps=0.1)
    det.pgd_accuracy, det.fgsm_accuracy = [0.4, 0.45], [0.5, 0.55]
    det._accuracy = lambda model, attack: 0.02 if attack is det.pgd else 0.9
    report = det.epoch_end(nn.Linear(1, 1))
    assert report.flagged and report.flag_epoch == 3
    assert not det.epoch_end(nn.Linear(1, 1)).flagged  # fires once


def test_robust_overfitting_tracker_and_resume():
    tracker = RobustOverfittingTracker(reference_epoch=2)
    history = [(1.0, 1.2), (0.8, 1.0), (0.5, 1.1), (0.3, 1.3)]
    reports = [tracker.update(tr, te) for tr, te in history]
    assert reports[0]["gap_ratio"] is None
    assert [round(r["gap_ratio"], 6) for r in reports[1:]] == [1.0, 3.0, 5.0]
    assert reports[-1]["best_epoch"] == 2
    again = RobustOverfittingTracker(reference_epoch=2)
    again.load_state_dict(tracker.state_dict())
    assert again.update(0.2, 1.4) == tracker.update(0.2, 1.4)
