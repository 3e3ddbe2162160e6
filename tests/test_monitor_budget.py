"""The monitor's evaluation budget: what a training step costs in passes, what an evaluation costs, and that the
monitor spends no more than its share of the training it was fed, evaluating the last planned epoch whatever."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from advhooks import AWP, FGM, PGD, AdversarialStep
from advhooks.monitor import PhaseMonitor
from advhooks.monitor.budget import EvaluationBudget, evaluation_passes

from .conftest import SmallCNN


class _Passes:
    """Per-sample forwards and backwards of a model, counted by hooks."""

    def __init__(self, model: nn.Module) -> None:
        self.count = 0
        model.register_forward_hook(lambda m, args, out: self._add(args[0]))
        model.register_full_backward_hook(lambda m, grad_in, grad_out: self._add(grad_out[0]))

    def _add(self, tensor: torch.Tensor) -> None:
        self.count += int(tensor.shape[0])


def _data(n: int, seed: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen))


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize(("attack", "objective", "awp"), [
    (PGD(8 / 255, steps=10), "at", False), (PGD(8 / 255, steps=3), "trades", False),
    (FGM(8 / 255), "mart", False), (PGD(8 / 255, steps=2), "at", True)])
def test_a_steps_passes_are_the_passes_it_and_the_loops_backward_run(attack, objective, awp):
    torch.manual_seed(0)
    model = SmallCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    step = AdversarialStep(model, attack, objective=objective, awp=AWP(optimizer, gamma=0.01) if awp else None)
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))
    counter = _Passes(model)
    out = step(x, y)
    out.loss.backward()
    optimizer.step()
    assert out.passes * 6 == counter.count  # (AWP's functional_call runs the module, so its hooks count it)
    if objective == "at" and attack.steps == 10 and not awp:
        assert out.passes == 22


def test_the_budget_affords_what_keeps_the_spending_and_the_debt_within_its_share():
    budget = EvaluationBudget(share=0.05, trained=10_000.0, spent=200.0)
    assert budget.affords(200.0, owed=100.0) and not budget.affords(201.0, owed=100.0)
    restored = EvaluationBudget(share=0.05)
    restored.load_state_dict(budget.state_dict())
    assert (restored.trained, restored.spent) == (10_000.0, 200.0)
    legacy = EvaluationBudget(share=0.05)  # a state from before the budget: every epoch, as it was then
    legacy.load_state_dict({"rhat": None})
    assert legacy.affords(1e12, owed=1e12)
    assert evaluation_passes(PGD(0.1, steps=10)) == 21 and evaluation_passes(PGD(0.1, steps=10), 1) == 22
    assert evaluation_passes(PGD(0.1, steps=10, restarts=3)) == 63


def _watched_run(budget: float, epochs: int = 8) -> tuple[PhaseMonitor, list]:
    torch.manual_seed(0)
    model = SmallCNN()
    train, test = _data(96, 1), _data(40, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    step = AdversarialStep(model, PGD(0.1, steps=3))
    monitor = PhaseMonitor(0.5, eps=0.1, total_epochs=epochs, warmup_epochs=3, attack=PGD(0.1, steps=3))
    monitor.evaluate_with(model, train, test, train_subset=32, budget=budget)
    reports = []
    for _ in range(epochs):
        for i in range(0, 96, 32):
            out = step(*train[i:i + 32])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            monitor.update(out)
        reports.append(monitor.epoch_end())
    return monitor, reports


def test_the_monitor_spends_at_most_its_share_and_always_evaluates_the_last_epoch():
    # 96 samples × 8 passes an epoch; a test loss costs 40 × 7 and R̂ 32 × 8, both owed to the last epoch: at a
    # share of 0.4 the monitor affords an evaluation every few epochs, and everything at the last.
    monitor, reports = _watched_run(budget=0.4)
    budget = monitor._risk.budget
    assert budget.trained == 8 * 96 * 8
    assert budget.spent <= 0.4 * budget.trained
    evaluated = [r.adv_test_loss is not None for r in reports]
    assert 1 < sum(evaluated) < 8 and evaluated[-1]
    assert reports[-1].rhat_kind == "fixed weights"
    # Every epoch on an unlimited budget, and the same last epoch's test loss (the same samples and starts).
    _, every = _watched_run(budget=math.inf)
    assert all(r.adv_test_loss is not None for r in every)
    assert every[-1].adv_test_loss == pytest.approx(reports[-1].adv_test_loss, rel=1e-6)


def test_the_budget_survives_a_resume():
    monitor, _ = _watched_run(budget=0.4, epochs=8)
    state = monitor.state_dict()
    fresh = PhaseMonitor(0.5, eps=0.1, total_epochs=8, warmup_epochs=3, attack=PGD(0.1, steps=3))
    fresh.load_state_dict(state)
    assert (fresh._risk.budget.trained, fresh._risk.budget.spent) == (monitor._risk.budget.trained,
                                                                      monitor._risk.budget.spent)


def test_theta_hat_is_chosen_with_fewer_steps_and_rhat_with_the_evaluation_attack():
    model = SmallCNN()
    monitor = PhaseMonitor(0.5, eps=0.1, total_epochs=1, attack=PGD(0.1, steps=10, step_size=0.02))
    monitor.evaluate_with(model, _data(16, 1), _data(16, 2))
    evaluation = monitor._risk.evaluation
    selection = evaluation.selection_attack_at(0.1)
    assert selection.steps == 3 and selection.step_size is None and selection.eps == 0.1
    assert evaluation.attack_at(0.1).steps == 10
    assert evaluation.passes(0.1) == {"test": 16 * 7, "rhat": 16 * 22}


def test_the_warm_ups_rhat_is_made_even_when_nothing_was_affordable_before():
    # A share so small that no epoch before the warm-up's end affords a test loss: the warm-up's end still makes the
    # test loss that picks θ̂ and its fixed-weights R̂ (reserved from the start), so the first verdict is not provisional.
    monitor, reports = _watched_run(budget=0.01)
    assert all(r.adv_test_loss is None for r in reports[:2])
    assert reports[2].adv_test_loss is not None and reports[2].rhat_kind == "fixed weights"
    assert all(r.rhat_kind == "fixed weights" for r in reports[2:])


def test_a_test_loader_is_evaluated_whole():
    # A subset is drawn from a Dataset; a loader (allowed on one process) is evaluated whole, default subset or not.
    model = SmallCNN()
    monitor = PhaseMonitor(0.5, eps=0.1, total_epochs=1, attack=PGD(0.1, steps=2))
    monitor.evaluate_with(model, _data(32, 1), torch.utils.data.DataLoader(_data(24, 2), batch_size=8))
    monitor.update(torch.tensor(0.7), batch_size=32)
    report = monitor.epoch_end()
    assert report.adv_test_loss is not None and report.rhat_kind == "fixed weights"
