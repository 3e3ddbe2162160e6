"""Models of the paper's settings: the MNIST CNN and MLP, and PreActResNet18 (Rice et al. 2020).

Normalisation, where a dataset needs it, sits inside the model (:class:`Normalize`) so attacks work
in pixel space with ε in pixel units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLP", "MnistCNN", "Normalize", "PreActBlock", "PreActResNet18"]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as a module so the model takes pixel-space inputs.

    Args:
        mean: per-channel means.
        std: per-channel standard deviations (> 0).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if not (std_t > 0).all():
            raise ValueError(f"std must be > 0 in every channel, got {std!r}")
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MnistCNN(nn.Module):
    """The paper's MNIST model: two convolution layers and two fully connected layers.

    Args:
        hidden: width of the first fully connected layer (the paper uses 16 and 128).
        in_channels: input channels.
        image_size: side of the square input (28 for MNIST).
        num_classes: output classes.

    Example:
        >>> MnistCNN(hidden=16)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, hidden: int = 128, in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        side = image_size // 4
        self.fc1 = nn.Linear(64 * side * side, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class MLP(nn.Module):
    """A one-hidden-layer perceptron on flattened inputs (the paper's MLP(16)/MLP(128)).

    Args:
        in_features: flattened input size.
        hidden: hidden width.
        num_classes: output classes.

    Example:
        >>> MLP(64, hidden=16)(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_features: int, hidden: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        if hidden < 1 or in_features < 1:
            raise ValueError(f"in_features and hidden must be >= 1, got {in_features}, {hidden}")
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016), as in Rice et al.'s code."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """PreActResNet18 for 32×32 inputs, as in Rice et al. (2020), with optional input normalisation.

    Args:
        num_classes: output classes.
        in_channels: input channels.
        mean: per-channel mean for a :class:`Normalize` first layer (``None``: no normalisation).
        std: per-channel std for it.

    Example:
        >>> PreActResNet18()(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std) if mean is not None and std is not None else nn.Identity()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        blocks: list[nn.Module] = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            for s in (stride, 1):
                blocks.append(PreActBlock(in_planes, planes, s))
                in_planes = planes
        self.layers = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.conv1(self.normalize(x)))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)
