"""Model and data factories that the CLI tests pass as ``--model tests.cli_factories:...``."""

from __future__ import annotations

import math

import torch
from torch import nn


def mlp() -> nn.Module:
    """A small MLP for 1×8×8 inputs."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def data_with_a_nan():
    """(train, test) of 1×8×8 images where one training pixel is NaN."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)
    x[5, 0, 3, 3] = math.nan
    test_x, test_y = torch.rand(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)
    test = torch.utils.data.TensorDataset(test_x, test_y)
    return torch.utils.data.TensorDataset(x, y), test


def mlp_of_width(width: int) -> nn.Module:
    """A one-hidden-layer MLP for 1×8×8 inputs whose hidden width the study varies."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


def digits():
    """(train, test): the bundled digits, through a user's data factory."""
    from advhooks.kit.data import load_digits

    return load_digits()
