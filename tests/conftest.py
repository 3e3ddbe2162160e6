"""Shared fixtures: small real models and batches, all on the CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class SmallCNN(nn.Module):
    """A small CNN with BatchNorm and dropout: enough state to catch an attack that changes it."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(8 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        h = nn.functional.adaptive_avg_pool2d(h, 4).flatten(1)
        return self.fc(self.drop(h))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def cnn() -> SmallCNN:
    model = SmallCNN()
    # Non-trivial running statistics, so "unchanged" is a real check.
    with torch.no_grad():
        model.train()(torch.rand(32, 1, 8, 8))
    return model


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))


@pytest.fixture(scope="session")
def trained_digits_cnn():
    """A SmallCNN trained for 4 epochs on the bundled digits (eval mode), and the digits test set."""
    from advhooks.kit.data import load_digits

    torch.manual_seed(0)
    train, test = load_digits()
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(4):
        for x, y in torch.utils.data.DataLoader(train, batch_size=64, shuffle=True):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval(), test
