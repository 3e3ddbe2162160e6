"""A call does what its name says: no evaluation, weight swap or logging change hidden in a getter, a
``record()`` or an import."""

from __future__ import annotations

import logging
import subprocess
import sys

import torch
from torch.utils.data import TensorDataset

from advhooks import APGD, PGD
from advhooks.monitor import PhaseMonitor

from .conftest import SmallCNN


def _data(n: int, seed: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen))


def test_record_evaluates_nothing_and_evaluate_rhat_says_when_it_does():
    model = SmallCNN()
    monitor = PhaseMonitor(0.5, eps=0.1, warmup_epochs=10, attack=PGD(0.1, steps=1, random_start=False))
    monitor.evaluate_with(model, _data(40, 1), _data(20, 2), train_subset=16)
    monitor.update(torch.tensor(0.7), batch_size=8)
    monitor.epoch_end()  # θ̂ = epoch 1, its R̂ due only after the warm-up
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    seconds = dict(monitor.evaluation_seconds)
    assert monitor.record()["rhat"]["kind"] == "running mean"
    assert monitor.evaluation_seconds == seconds
    assert monitor.evaluate_rhat() is True and monitor.record()["rhat"]["kind"] == "fixed weights"
    assert monitor.evaluate_rhat() is False  # nothing left to evaluate
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())  # the caller's weights


def test_verbose_shows_each_epoch_without_changing_a_logger_level(caplog):
    levels = {name: logging.getLogger(name).level for name in ("advhooks", "advhooks.monitor")}
    monitor = PhaseMonitor(0.5, eps=0.1, warmup_epochs=1, verbose=True)
    assert not logging.getLogger("advhooks.monitor").isEnabledFor(logging.INFO)  # the library's default: WARNING
    monitor.update(torch.tensor(0.7), batch_size=8)
    monitor.epoch_end()  # verbose: the epoch line reaches the handlers all the same
    assert any(r.getMessage().startswith("epoch 1: R-hat") for r in caplog.records)
    assert {name: logging.getLogger(name).level for name in levels} == levels


def test_importing_the_kit_configures_no_logger():
    # (torch sets levels of its own loggers; advhooks sets only its library logger's default, in advhooks.logs)
    code = ("import logging; import advhooks.kit.estimate; "
            "print(sorted(n for n, l in logging.root.manager.loggerDict.items() if n.startswith('advhooks') "
            "and isinstance(l, logging.Logger) and l.level != logging.NOTSET and n != 'advhooks'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_an_apgd_attack_names_the_loss_it_maximises_now():
    attack = APGD(0.1, criterion="dlr")
    assert attack.criterion_name == "dlr"
    attack.criterion = lambda logits, y: logits.sum(1)
    assert attack.criterion_name == "custom"


def test_no_property_evaluates_copies_weights_or_touches_files():
    # A property reads a value; the work of evaluating, copying weights or reading and writing files is done by
    # a method whose name says so (state_dict, load_state_dict, evaluate_rhat, save_record ...).
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    hidden = {"load_file", "save_file", "open", "write_weights", "atomic_write", "write_json_atomic", "torch.load",
              "evaluate_adversarial_loss", "adversarial_loss", "settle", "state_dict", "load_state_dict", "clone",
              "deepcopy", "read_text", "write_text"}
    found = []
    for path in [*(root / "advhooks").rglob("*.py"), *(root / "integrations").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            if not any(isinstance(d, ast.Name) and d.id == "property" or isinstance(d, ast.Attribute)
                       and d.attr == "setter" for d in node.decorator_list):
                continue
            for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
                name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
                if name in hidden:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} calls {name}")
    assert found == []
