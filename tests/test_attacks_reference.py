"""The batched attacks against a slow, obviously-correct per-sample PGD and against torchattacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advhooks.attacks import FGM, PGD, pgd_perturb
from advhooks.attacks.norms import random_in_ball_


def reference_pgd(model, x, y, *, eps, norm, steps, step_size, start, low=0.0, high=1.0):
    """One sample at a time, plain formulas, no in-place tricks."""
    model.eval()
    out = []
    for i in range(x.shape[0]):
        xi, yi = x[i : i + 1], y[i : i + 1]
        delta = start[i : i + 1].clone()
        for _ in range(steps):
            d = delta.clone().requires_grad_(True)
            loss = nn.functional.cross_entropy(model(xi + d), yi)
            (g,) = torch.autograd.grad(loss, d)
            if norm == "linf":
                d = delta + step_size * torch.sign(g)
                d = torch.max(torch.min(d, torch.full_like(d, eps)), torch.full_like(d, -eps))
            else:
                gn = g.norm()
                d = delta + step_size * (g / gn if gn > 1e-12 else torch.zeros_like(g))
                dn = d.norm()
                if dn > eps:
                    d = d * (eps / dn)
            adv = torch.clamp(xi + d, low, high)
            delta = adv - xi
        out.append(xi + delta)
    return torch.cat(out)


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
@pytest.mark.parametrize("random_start", [False, True])
def test_batched_pgd_matches_the_per_sample_reference(cnn, batch, norm, eps, random_start):
    x, y = batch
    x, cnn = x.double(), cnn.double()
    steps, step_size = 7, 2.5 * eps / 7
    start = torch.zeros_like(x)
    if random_start:
        random_in_ball_(start, norm, eps, torch.Generator().manual_seed(3))
        start = torch.clamp(x + start, 0, 1) - x
    ours = pgd_perturb(cnn, x, y, eps=eps, norm=norm, steps=steps, random_start=random_start,
                       generator=torch.Generator().manual_seed(3))
    ref = reference_pgd(cnn, x, y, eps=eps, norm=norm, steps=steps, step_size=step_size, start=start)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-9)


@pytest.fixture
def torchattacks():
    """The torchattacks module; only the cross-checks that ask for it skip when it is missing."""
    return pytest.importorskip("torchattacks", reason="cross-checks need torchattacks: pip install 'advhooks[dev]'")


class _MnistLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10),
        )

    def forward(self, x):
        return self.net(x)


@pytest.fixture
def mnist_like():
    torch.manual_seed(0)
    return _MnistLike(), torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))


def test_pgd_linf_matches_torchattacks(torchattacks, mnist_like):
    model, x, y = mnist_like
    eps, alpha, steps = 8 / 255, 2 / 255, 10
    ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    ours = PGD(eps, steps=steps, step_size=alpha, random_start=False)(model, x, y)
    torch.testing.assert_close(ours, ta, rtol=0, atol=1e-6)


def test_pgd_l2_matches_torchattacks(torchattacks, mnist_like):
    model, x, y = mnist_like
    eps, alpha, steps = 1.0, 0.2, 10
    ta = torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    ours = PGD(eps, norm="l2", steps=steps, step_size=alpha, random_start=False)(model, x, y)
    torch.testing.assert_close(ours, ta, rtol=0, atol=1e-6)


def test_fgsm_matches_torchattacks(torchattacks, mnist_like):
    model, x, y = mnist_like
    ta = torchattacks.FGSM(model, eps=8 / 255)(x, y)
    ours = FGM(8 / 255)(model, x, y)
    torch.testing.assert_close(ours, ta, rtol=0, atol=1e-6)
