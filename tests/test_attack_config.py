"""AttackConfig: every attack setting declared and validated once, shared by the functions and the classes."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch
from torch import nn

from advhooks import FGM, PGD, Attack, AttackConfig, fgm_perturb, perturb, pgd_perturb
from advhooks.attacks.criteria import cross_entropy


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 4)), torch.rand(6, 1, 4, 4), torch.randint(0, 4, (6,))


def test_the_function_the_keyword_form_and_the_class_give_the_same_examples(batch):
    model, x, y = batch
    config = AttackConfig(0.1, norm="l2", steps=4, restarts=2)
    runs = [
        perturb(model, x, y, config, generator=torch.Generator().manual_seed(3)),
        pgd_perturb(model, x, y, eps=0.1, norm="l2", steps=4, restarts=2, generator=torch.Generator().manual_seed(3)),
        PGD(0.1, norm="l2", steps=4, restarts=2)(model, x, y, generator=torch.Generator().manual_seed(3)),
        Attack(config)(model, x, y, generator=torch.Generator().manual_seed(3)),
    ]
    for other in runs[1:]:
        assert torch.equal(runs[0], other)
    fgm = AttackConfig(0.1, steps=1, step_rule="fgm", random_start=False)
    assert torch.equal(perturb(model, x, y, fgm), fgm_perturb(model, x, y, eps=0.1))
    assert torch.equal(perturb(model, x, y, fgm), FGM(0.1)(model, x, y))


def test_the_default_step_sizes_are_defined_once():
    assert AttackConfig(0.1, steps=10).step_size_for(0.1) == pytest.approx(0.025)  # PGD: 2.5 eps / steps
    assert AttackConfig(0.1, steps=1, step_rule="fgm", random_start=False).step_size_for(0.1) == pytest.approx(0.1)
    assert AttackConfig(0.1, steps=1, step_rule="fgm").step_size_for(0.1) == pytest.approx(0.125)  # FGSM-RS
    assert AttackConfig(0.1, step_size=0.01).step_size_for(0.2) == 0.01
    assert PGD(0.1).default_step_size(0.1) == AttackConfig(0.1).step_size_for(0.1)


@pytest.mark.parametrize("settings, error, match", [
    (dict(norm="l3"), ValueError, "norm must be one of"),
    (dict(steps=0), ValueError, "steps"),
    (dict(step_rule="adam"), ValueError, "step_rule must be one of"),
    (dict(bn="frozen"), ValueError, "bn must be one of"),
    (dict(precision="fp8"), ValueError, "precision must be one of"),
    (dict(out_of_bounds="wrap"), ValueError, "out_of_bounds must be one of"),
    (dict(criterion="ce"), TypeError, "criterion must be callable"),
    (dict(eps=2.0), ValueError, "larger than the bounds' range"),
])
def test_a_bad_setting_is_refused_where_the_config_is_built(settings, error, match):
    with pytest.raises(error, match=match):
        AttackConfig(**{"eps": 0.1, **settings})
    if "step_rule" not in settings:  # the class refuses it through the same config
        with pytest.raises(error, match=match):
            PGD(**{"eps": 0.1, **settings})


def test_the_config_is_frozen_and_a_setting_on_the_attack_replaces_it_validated(batch):
    attack = PGD(0.1, steps=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        attack.config.steps = 5
    before = attack.config
    attack.bn = "train"
    assert attack.bn == "train" and attack.config is not before and before.bn == "eval"
    with pytest.raises(ValueError, match="bn must be one of"):
        attack.bn = "frozen"
    assert attack.bn == "train"
    assert attack.criterion_fn is cross_entropy and not attack.custom_criterion
    with pytest.raises(AttributeError, match="domain is derived from the attack's settings"):
        attack.domain = None
    with pytest.raises(TypeError, match="takes an AttackConfig"):
        Attack(0.1)


def test_an_attack_takes_criterion_and_not_the_old_name_objective(batch):
    model, x, y = batch
    seen = []

    def criterion(logits, targets):
        seen.append(1)
        return cross_entropy(logits, targets)

    attack = PGD(0.1, steps=2, criterion=criterion)
    assert attack.criterion is criterion and attack.custom_criterion
    attack(model, x, y)
    assert len(seen) == 2
    with pytest.raises(TypeError, match="objective"):
        PGD(0.1, steps=2, objective=criterion)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("advhooks.attacks.objectives")



def test_the_cuda_graph_cache_keeps_the_most_recent_captures_under_an_eps_schedule(caplog):
    # The cache of GraphedAttack itself (a capture needs a GPU: benchmarks/gpu_check.py runs the real one): 100
    # distinct ε values, as a schedule gives, keep at most MAX_CAPTURES, the most recently used, and warn once.
    from advhooks.attacks.graphs import MAX_CAPTURES, GraphedAttack

    graphs, made = GraphedAttack(), []
    with caplog.at_level("WARNING", logger="advhooks"):
        for step in range(100):
            eps = 8 / 255 * min(1.0, step / 50)
            key = ("model", (128, 3, 32, 32), eps)
            assert graphs.cached(key, lambda k=key: made.append(k) or k) == key
            assert graphs.cached(("model", (256, 3, 32, 32), 8 / 255), lambda: made.append("8/255") or "8/255")
    assert len(graphs) <= MAX_CAPTURES
    assert made.count("8/255") == 1  # used at every step: never evicted, never recaptured
    assert len(made) == 52  # the schedule's 51 distinct ε (constant from step 50) and the constant one
    assert sum("captured" in r.getMessage() for r in caplog.records) == 1


def test_a_field_added_to_attack_config_is_a_setting_of_every_attack_and_function(monkeypatch):
    # The attack classes and the functional forms declare no setting of their own: a field added to AttackConfig
    # (here by a subclass standing in for the edited class) is an argument of each without another edit.
    import inspect

    import advhooks.attacks.config as config_module
    from advhooks.attacks import APGD, FGM, PGD, fgm_perturb, pgd_perturb
    from advhooks.attacks.functional import FGM_FUNCTION, PGD_FUNCTION

    extended = dataclasses.make_dataclass(
        "ExtendedConfig", [("momentum_decay", float, dataclasses.field(default=0.5))],
        bases=(config_module.AttackConfig,), frozen=True)
    monkeypatch.setattr(config_module, "AttackConfig", extended)
    for attack in (PGD(0.1, momentum_decay=0.9), FGM(0.1, momentum_decay=0.9), APGD(0.1, momentum_decay=0.9)):
        assert attack.config.momentum_decay == 0.9
    assert PGD(0.1).config.momentum_decay == 0.5
    for kind in (PGD.KIND, FGM.KIND, APGD.KIND, PGD_FUNCTION, FGM_FUNCTION):
        assert kind.arguments()["momentum_decay"] == 0.5
        assert "momentum_decay" in kind.signature([]).parameters
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 1])
    for fn in (pgd_perturb, fgm_perturb):
        assert fn(net, x, y, eps=0.1, momentum_decay=0.9).shape == x.shape
    with pytest.raises(TypeError, match="unexpected keyword argument 'momentum_decy'"):
        PGD(0.1, momentum_decy=0.9)
    assert "steps" not in inspect.signature(FGM).parameters
    assert "cuda_graph" not in inspect.signature(pgd_perturb).parameters
