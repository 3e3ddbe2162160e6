"""AWP in a loop the user owns: one step equals the reference algorithm (a proxy copy, one SGD step on the negated
loss, the per-layer diff scaled to the weight norm, added, trained through, taken off), and the weights come back
after a skipped step, across gradient accumulation, for evaluation and for a state dict."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advhooks import AWP, FGM, PGD, AdversarialStep
from advhooks.losses import mart_loss, trades_loss

GAMMA = 0.01


class BNNet(nn.Module):
    """Conv + BatchNorm + linear: weights AWP perturbs (conv, linear) and ones it leaves (BN, biases)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


def _batch(seed: int = 0, n: int = 16):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _objective(name: str, model: nn.Module, x: torch.Tensor, adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if name == "trades":
        return trades_loss(model(x), model(adv), y, beta=6.0)
    if name == "mart":
        return mart_loss(model(x), model(adv), y, beta=6.0)
    return F.cross_entropy(model(adv), y)


def _reference_step(name, model, opt, x, adv, y, gamma=GAMMA):
    """The reference AWP step, re-implemented: proxy = copy, SGD(lr 0.01) on −loss, diff per weight (dim > 1),
    scaled to ‖w‖, added × γ, training step, taken off."""
    proxy = copy.deepcopy(model)
    proxy.load_state_dict(model.state_dict())
    proxy.train()
    proxy_opt = torch.optim.SGD(proxy.parameters(), lr=0.01)
    loss = -_objective(name, proxy, x, adv, y)
    proxy_opt.zero_grad()
    loss.backward()
    proxy_opt.step()
    diff = OrderedDict()
    for (k, old), (_, new) in zip(model.state_dict().items(), proxy.state_dict().items(), strict=True):
        if old.dim() > 1 and "weight" in k:
            diff[k] = old.norm() / ((new - old).norm() + 1e-20) * (new - old)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, d in diff.items():
            params[k].add_(gamma * d)
    opt.zero_grad()
    _objective(name, model, x, adv, y).backward()
    opt.step()
    with torch.no_grad():
        for k, d in diff.items():
            params[k].sub_(gamma * d)


def _pair():
    torch.manual_seed(0)
    ours = BNNet().train()
    ref = copy.deepcopy(ours)
    kw = dict(lr=0.05, momentum=0.9, weight_decay=5e-4)
    return ours, torch.optim.SGD(ours.parameters(), **kw), ref, torch.optim.SGD(ref.parameters(), **kw)


@pytest.mark.parametrize("objective", ["at", "trades", "mart"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_two_steps_equal_the_reference_algorithm(objective, norm):
    ours, opt, ref, ref_opt = _pair()
    attack = PGD(8 / 255 if norm == "linf" else 0.5, norm=norm, steps=3, random_start=objective == "trades")
    step = AdversarialStep(ours, attack, objective=objective, awp=AWP(opt, gamma=GAMMA))
    for seed in (0, 1):
        x, y = _batch(seed)
        torch.manual_seed(seed)
        out = step(x, y)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        _reference_step(objective, ref, ref_opt, x, out.adv_inputs, y)
    assert not step.awp.applied
    for (name, a), (_, b) in zip(ours.state_dict().items(), ref.state_dict().items(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6, rtol=0), name  # weights and BatchNorm buffers
    for a, b in zip(opt.param_groups[0]["params"], ref_opt.param_groups[0]["params"], strict=True):
        assert torch.allclose(opt.state[a]["momentum_buffer"], ref_opt.state[b]["momentum_buffer"], atol=1e-6)


def test_the_perturbation_is_per_layer_relative_and_leaves_biases_and_batchnorm():
    model = BNNet().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = AdversarialStep(model, FGM(8 / 255, random_start=True), awp=AWP(opt, gamma=0.02))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    step(*_batch())
    after = dict(model.named_parameters())  # (a state_dict() would take the perturbation off first)
    for name in ("conv.weight", "fc.weight"):
        moved = (after[name] - before[name]).norm() / before[name].norm()
        assert moved.item() == pytest.approx(0.02, rel=1e-4)
    for name in ("conv.bias", "fc.bias", "bn.weight", "bn.bias"):
        assert torch.equal(after[name], before[name]), name


def test_the_awp_gradient_leaves_batchnorm_statistics_and_grads_alone():
    model = BNNet().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    awp = AWP(opt, gamma=GAMMA)
    step = AdversarialStep(model, FGM(8 / 255, random_start=True), awp=awp)
    x, y = _batch()
    stats = (model.bn.running_mean.clone(), model.bn.num_batches_tracked.clone())
    awp.before_attack()
    awp.perturb(lambda forward: F.cross_entropy(forward(x), y))
    assert torch.equal(model.bn.running_mean, stats[0]) and torch.equal(model.bn.num_batches_tracked, stats[1])
    assert all(p.grad is None for p in model.parameters())
    awp.remove()
    del step


def test_a_skipped_step_evaluation_and_state_dict_see_the_unperturbed_weights():
    model = BNNet().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = AdversarialStep(model, FGM(8 / 255, random_start=True), awp=AWP(opt, gamma=GAMMA))
    start = {k: v.clone() for k, v in model.named_parameters()}
    out = step(*_batch())
    out.loss.backward()  # ... and the step is skipped (a GradScaler that found inf)
    assert step.awp.applied
    saved = model.state_dict()  # read between the backward and the step: the unperturbed weights
    assert all(torch.allclose(saved[k], v, atol=1e-7) for k, v in start.items())  # (w + v) - v, as the reference
    stale = step.awp._perturbation
    opt.zero_grad()
    out = step(*_batch(1))  # the stale perturbation is dropped, a fresh one computed
    assert step.awp._perturbation is not stale
    out.loss.backward()
    model.eval()
    model(_batch()[0])  # evaluation in between takes it off
    assert not step.awp.applied and all(torch.allclose(p, start[k], atol=1e-7) for k, p in model.named_parameters())


def test_gradient_accumulation_uses_one_perturbation_per_optimizer_step():
    model = BNNet().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    awp = AWP(opt, gamma=GAMMA)
    step = AdversarialStep(model, FGM(8 / 255, random_start=True), awp=awp)
    computed = []
    original = awp._compute
    awp._compute = lambda loss_of: computed.append(1) or original(loss_of)
    start = {k: v.clone() for k, v in model.named_parameters()}
    seen_by_attack = []
    model.register_forward_hook(lambda m, i, o: seen_by_attack.append(m.fc.weight.clone()) if not m.training else None)
    opt.zero_grad()
    for seed in (0, 1, 2):  # three micro-batches, one step
        step(*_batch(seed)).loss.backward()
    assert len(computed) == 1
    # every attack saw the unperturbed weights (to rounding: (w + v) - v)
    assert seen_by_attack and all(torch.allclose(w, start["fc.weight"], atol=1e-7) for w in seen_by_attack)
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    opt.step()
    assert not awp.applied
    for k, p in model.named_parameters():
        assert torch.allclose(p, start[k] - 0.1 * grads[k], atol=1e-7), k


def test_warmup_steps_train_without_awp():
    model = BNNet().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = AdversarialStep(model, FGM(8 / 255, random_start=True), awp=AWP(opt, gamma=GAMMA, warmup_steps=1))
    step(*_batch()).loss.backward()
    assert not step.awp.applied
    opt.step()
    opt.zero_grad()
    step(*_batch(1))
    assert step.awp.applied


class PlainNet(nn.Module):
    """No BatchNorm: its batch statistics would differ between one process's 16 samples and two processes' 8."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).flatten(1))


def _train_awp(model: nn.Module, wrapped: nn.Module, rank: int, world: int) -> None:
    """Three AWP steps of AT on a global batch of 16 (deterministic PGD), this rank's share of each."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    step = AdversarialStep(wrapped, PGD(8 / 255, steps=3, random_start=False), awp=AWP(opt, gamma=GAMMA))
    per = 16 // world
    for seed in range(3):
        x, y = _batch(seed)
        out = step(x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per])
        opt.zero_grad()
        out.loss.backward()
        opt.step()


def _awp_worker(rank: int, world: int, out_dir: str) -> None:
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from ._gloo import init_gloo, leave

    init_gloo(rank, world, out_dir)
    torch.manual_seed(0)
    model = PlainNet()
    _train_awp(model, DDP(model), rank, world)
    if dist.get_rank() == 0:
        torch.save(model.state_dict(), os.path.join(out_dir, "two.pt"))
    leave()


def test_two_processes_equal_one_to_summation_order(tmp_path):
    """Each process perturbs by the gradient averaged over both (one all_reduce of AWP's own), so two processes
    with 8 samples each train exactly as one process with all 16."""
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    mp.spawn(_awp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    torch.manual_seed(0)
    one = PlainNet()
    _train_awp(one, one, 0, 1)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    for name, value in one.state_dict().items():
        torch.testing.assert_close(two[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_evaluation_calls_loading_weights_and_a_frozen_batchnorm_model():
    model = BNNet().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    awp = AWP(opt, gamma=GAMMA)
    step = AdversarialStep(model, FGM(8 / 255, random_start=True), awp=awp)
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    with torch.no_grad():  # an evaluation batch: no perturbation computed or applied, no error
        step(*_batch(), advance=False)
    assert not awp.applied and awp._perturbation is None
    checkpoint = copy.deepcopy(model.state_dict())
    out = step(*_batch())
    out.loss.backward()  # (the step is skipped)
    model.load_state_dict(checkpoint)  # loading drops the perturbation: the loaded weights stay as loaded
    step(*_batch(1))
    awp.remove()
    assert all(torch.allclose(p, start[k], atol=1e-7) for k, p in model.named_parameters())
    model.eval()  # trained with frozen BatchNorm: the training forward still runs at the perturbed weights
    opt.zero_grad()
    out = step(*_batch(2))
    assert awp.applied
    awp.remove()
    with torch.no_grad():  # the same adversarial inputs at the unperturbed weights
        plain = F.cross_entropy(model(out.adv_inputs), _batch(2)[1])
    assert not torch.isclose(out.loss.detach(), plain)
