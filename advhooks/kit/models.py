"""Models of the paper's settings: the MNIST CNN and MLP, PreActResNet18 and WideResNet34-k (as in
Rice et al. 2020), and a small CNN for the embedded 8×8 digits.

Normalisation, where a dataset needs it, sits inside the model (:class:`Normalize`) so attacks work
in pixel space with ε in pixel units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLP", "DigitsCNN", "MnistCNN", "Normalize", "PreActBlock", "PreActResNet18", "SignalCNN", "WideResNet"]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel (dimension 1 of images ``(N, C, H, W)`` or signals ``(N, C, L)``), as a
    module so the model takes pixel-space inputs.

    Args:
        mean: per-channel means.
        std: per-channel standard deviations (> 0).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if not (std_t > 0).all():
            raise ValueError(f"std must be > 0 in every channel, got {std!r}")
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)


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


class DigitsCNN(nn.Module):
    """A small CNN for 8×8 single-channel images (the embedded digits preset).

    Args:
        channels: channels of the first convolution (the second has twice as many).
        num_classes: output classes.

    Example:
        >>> DigitsCNN()(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, channels: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        self.fc = nn.Linear(2 * channels * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


class SignalCNN(nn.Module):
    """A small 1-D CNN for single-channel signals (the MNIST-1D preset): three convolutions (the last two with
    stride 2), then one linear layer.

    Args:
        channels: channels of every convolution.
        length: the signal's length.
        num_classes: output classes.

    Example:
        >>> SignalCNN(channels=8)(torch.rand(2, 1, 40)).shape
        torch.Size([2, 10])
    """

    def __init__(self, channels: int = 32, length: int = 40, num_classes: int = 10) -> None:
        super().__init__()
        if channels < 1 or length < 4:
            raise ValueError(f"channels must be >= 1 and length >= 4, got {channels}, {length}")
        self.conv1 = nn.Conv1d(1, channels, 5, padding=2)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.fc = nn.Linear(channels * (((length + 1) // 2 + 1) // 2), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv3(F.relu(self.conv2(F.relu(self.conv1(x))))))
        return self.fc(x.flatten(1))


class _WideBasic(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal = in_planes == out_planes
        self.shortcut = None if self.equal else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.equal else self.shortcut(out)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class WideResNet(nn.Module):
    """WideResNet-depth-k (Zagoruyko & Komodakis 2016) as used by Rice et al. (2020); depth 34 by default.

    Args:
        depth: 6n + 4 layers (34 in the paper).
        widen_factor: k (1 and 10 in the paper's Table 3).
        num_classes: output classes.
        mean: per-channel mean for a :class:`Normalize` first layer (``None``: no normalisation).
        std: per-channel std for it.

    Example:
        >>> WideResNet(depth=10, widen_factor=1)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, depth: int = 34, widen_factor: int = 10, num_classes: int = 10,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (e.g. 34), got {depth}")
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be >= 1, got {widen_factor}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.normalize = Normalize(mean, std) if mean is not None and std is not None else nn.Identity()
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        blocks: list[nn.Module] = []
        in_planes = widths[0]
        for width, stride in zip(widths[1:], (1, 2, 2), strict=True):
            for i in range(n):
                blocks.append(_WideBasic(in_planes, width, stride if i == 0 else 1))
                in_planes = width
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.conv1(self.normalize(x)))
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1)
        return self.fc(out)
