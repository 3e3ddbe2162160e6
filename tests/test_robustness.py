"""Robust accuracy by a suite of attacks on the still-robust points: monotone, its adversarial inputs
really break the samples it counts as broken, and APGD's suite is at least as strong as PGD's."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from advhooks.kit.data import load_digits
from advhooks.robustness import SUITES, attack_batch, robust_accuracy


@pytest.fixture
def trained(trained_digits_cnn):
    """The trained digits CNN and 96 test samples."""
    model, test = trained_digits_cnn
    return model, TensorDataset(test.tensors[0][:96], test.tensors[1][:96])


def test_the_suite_only_lowers_accuracy_and_its_examples_break_what_it_counts_as_broken(trained):
    model, data = trained
    x, y = data.tensors
    adv, masks = attack_batch(model, x, y, 0.1, suite="fast")
    names = ["clean", *(a.name for a in SUITES["fast"])]
    assert list(masks) == names
    for before, after in zip(names, names[1:], strict=False):
        assert not bool((masks[after] & ~masks[before]).any())  # a broken sample never comes back
    broken = masks["clean"] & ~masks[names[-1]]
    assert int(broken.sum()) > 0
    with torch.no_grad():
        assert bool((model(adv[broken]).argmax(1) != y[broken]).all())
    assert bool(((adv - x).abs().amax(dim=(1, 2, 3)) <= 0.1 + 1e-6).all())
    assert torch.equal(adv[~broken], x[~broken])


def test_apgds_suite_is_at_least_as_strong_as_early_stopping_pgd(trained):
    model, data = trained
    apgd = robust_accuracy(model, data, 0.1, suite="fast", batch_size=48)
    pgd = robust_accuracy(model, data, 0.1, suite="pgd", batch_size=48)
    assert apgd.n == pgd.n == 96 and apgd.clean_accuracy == pgd.clean_accuracy
    assert apgd.robust_accuracy <= pgd.robust_accuracy < apgd.clean_accuracy
    assert list(apgd.after) == [a.name for a in SUITES["fast"]] and set(apgd.seconds) == set(apgd.after)
    assert "robust accuracy (fast suite)" in apgd.summary()


def test_at_zero_strength_the_robust_accuracy_is_the_clean_one(trained):
    model, data = trained
    report = robust_accuracy(model, data, 0.0, suite="apgd", n=40, batch_size=16)
    assert report.n == 40 and report.robust_accuracy == report.clean_accuracy


def test_an_unknown_suite_is_refused(trained):
    model, data = trained
    with pytest.raises(ValueError, match="suite must be one of 'standard', 'apgd', 'fast', 'rand', 'pgd'"):
        robust_accuracy(model, data, 0.1, suite="autoattack")


def test_the_evaluate_command_reports_what_the_python_entry_reports(tmp_path):
    import json

    from safetensors.torch import save_file
    from typer.testing import CliRunner

    from advhooks.cli import app
    from advhooks.kit.presets import get_preset

    torch.manual_seed(0)
    net = get_preset("digits-cnn").model(None)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "model.safetensors")
    out = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "model.safetensors"), "--preset",
                                   "digits-cnn", "--eps", "0.1", "--suite", "pgd", "--n", "64", "--quiet", "--device",
                                   "cpu", "--json", str(tmp_path / "r.json")])
    assert out.exit_code == 0, out.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n"] == 64 and report["suite"] == "pgd" and "robust accuracy (pgd suite)" in out.output
    expected = robust_accuracy(net.eval(), load_digits()[1], 0.1, suite="pgd", n=64)
    assert report["robust_accuracy"] == expected.robust_accuracy
    assert report["clean_accuracy"] == expected.clean_accuracy
    bad = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "model.safetensors"), "--preset",
                                   "digits-cnn", "--suite", "autoattack"])
    assert bad.exit_code == 2 and "--suite must be one of standard, apgd, fast, rand, pgd" in bad.output


def test_the_apgd_suite_is_at_least_as_strong_as_torchattacks_apgd_ce_then_apgd_t(trained):
    torchattacks = pytest.importorskip("torchattacks", reason="the cross-check needs torchattacks: "
                                                              "pip install 'advhooks[dev]'")
    model, data = trained
    x, y = data.tensors[0][:64], data.tensors[1][:64]
    ours = robust_accuracy(model, TensorDataset(x, y), 0.1, suite="apgd")
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    for attack in (torchattacks.APGD(model, norm="Linf", eps=0.1, steps=100, n_restarts=1, loss="ce", seed=0),
                   torchattacks.APGDT(model, norm="Linf", eps=0.1, steps=100, n_restarts=1, n_classes=10, seed=0)):
        idx = robust.nonzero().squeeze(1)
        with torch.no_grad():
            robust[idx] = model(attack(x[idx], y[idx])).argmax(1) == y[idx]
    theirs = float(robust.float().mean())
    assert ours.robust_accuracy <= theirs + 0.005, (ours.robust_accuracy, theirs)  # never weaker


def test_apgd_ends_at_its_first_checkpoint_once_every_sample_is_broken(trained):
    from advhooks import APGD
    from advhooks.attacks.apgd import STOP_EVERY

    model, data = trained
    x, y = data.tensors
    with torch.no_grad():
        wrong = (model(x).argmax(1) + 1) % 10  # every sample is misclassified from the start
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        broken = torch.zeros_like(wrong, dtype=torch.bool)

        def watch(inputs, logits):
            broken.logical_or_(logits.argmax(1) != wrong)

        APGD(0.1, steps=100)(model, x, wrong, watch=watch, stop=lambda: bool(broken.all()))
        stopped = len(calls)
        calls.clear()
        APGD(0.1, steps=100)(model, x, wrong, watch=watch)
    finally:
        handle.remove()
    assert stopped == 1 + STOP_EVERY and len(calls) == 1 + 100  # the start, the steps up to the first question


def test_the_standard_suite_refuses_non_image_inputs_before_any_attack_runs():
    from torch import nn

    calls = []
    model = nn.Linear(4, 3)
    model.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match="Square attack needs image batches .* suite='apgd'"):
        robust_accuracy(model, TensorDataset(torch.rand(5, 4), torch.zeros(5, dtype=torch.long)), 0.1)
    assert not calls
    assert robust_accuracy(model, TensorDataset(torch.rand(5, 4), torch.zeros(5, dtype=torch.long)), 0.1,
                           suite="apgd").n == 5


def _second_target_only() -> torch.nn.Module:
    """Four classes on two inputs: class 0 wins at (0.5, 0.5); class 1, the most likely other one, is a constant
    no perturbation reaches; class 2 overtakes class 0 once the first input grows by 0.1."""
    net = torch.nn.Linear(2, 4)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0], [0.0, 0.0]]))
        net.bias.copy_(torch.tensor([1.0, 0.9, -2.0, 0.0]))
    return net.eval()


@pytest.mark.parametrize("kind", ["apgd-t", "fab-t"])
@pytest.mark.parametrize("rows", [1, 2048])  # one target per run (the old sequential order) or all of them together
def test_a_target_after_the_first_breaks_what_the_first_cannot(kind, rows, monkeypatch):
    import advhooks.robustness as robustness

    monkeypatch.setattr(robustness, "TARGET_ROWS", rows)
    x, y = torch.full((3, 2), 0.5), torch.zeros(3, dtype=torch.long)
    model = _second_target_only()
    adv, masks = attack_batch(model, x, y, 0.15, suite=[robustness.SuiteAttack(kind, kind, 20, targets=3)],
                              bounds=None)
    assert not masks[kind].any()  # all three broken, by the second target
    assert (model(adv).argmax(1) == 2).all() and float((adv - x).abs().max()) <= 0.15 + 1e-6


def test_a_batch_of_targets_is_never_larger_than_the_batch_given(monkeypatch):
    import advhooks.robustness as robustness

    rows, attempt = [], robustness._attempt

    def counting(model, x, *args):
        rows.append(x.shape[0])
        return attempt(model, x, *args)

    monkeypatch.setattr(robustness, "_attempt", counting)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 10)).eval()
    x = torch.rand(16, 1, 2, 2)
    with torch.no_grad():
        y = model(x).argmax(1)
    attack_batch(model, x, y, 1e-4, suite=[robustness.SuiteAttack("apgd-t", "apgd-t", 3, targets=9)])
    assert rows[0] == 16 and max(rows) <= 16 and len(rows) > 2  # the first target, then groups of one
