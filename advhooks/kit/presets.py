"""Named settings of the paper (dataset + model + clean-training defaults) used by the CLI and examples."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from torch import nn

from ..benchmark import Recipe
from .data import DATASETS, DatasetInfo
from .models import MLP, DigitsCNN, MnistCNN, Normalize, PreActResNet18, SignalCNN, WideResNet

__all__ = ["PRESETS", "Preset", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """A dataset, a model builder ``build(info, width)`` and its training recipe.

    ``width`` is the preset's size knob (hidden width, channels or widen factor); ``None`` takes the
    default.
    """

    name: str
    dataset: str
    build: Callable[[DatasetInfo, int | None], nn.Module]
    recipe: Recipe = Recipe()
    description: str = ""

    def model(self, width: int | None = None) -> nn.Module:
        """A freshly initialised model of this preset."""
        return self.build(DATASETS[self.dataset], width)


def _norm(info: DatasetInfo) -> dict:
    return {"mean": info.mean, "std": info.std, "num_classes": info.num_classes}


# Rice et al.'s CIFAR recipe: 200 epochs, batch 128, lr 0.1, weight decay 5e-4, crop + flip.
_CIFAR = Recipe(epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4, augmentation=True)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("digits-mlp", "digits", lambda i, w: MLP(64, hidden=w or 64), Recipe(),
               description="MLP(64) on the bundled 8×8 digits; the embedded default"),
        Preset("digits-cnn", "digits", lambda i, w: DigitsCNN(channels=w or 16), Recipe(epochs=40),
               description="small CNN on the bundled 8×8 digits"),
        Preset("mnist1d-mlp", "mnist1d", lambda i, w: nn.Sequential(Normalize(i.mean, i.std), MLP(40, hidden=w or 256)),
               Recipe(epochs=60),
               description="MLP(256) on MNIST-1D (generated offline; the bench extra): overfits heavily"),
        Preset("mnist1d-cnn", "mnist1d",
               lambda i, w: nn.Sequential(Normalize(i.mean, i.std), SignalCNN(channels=w or 32)), Recipe(epochs=60),
               description="small 1-D CNN on MNIST-1D (generated offline; the bench extra)"),
        Preset("mnist-cnn", "mnist", lambda i, w: MnistCNN(hidden=w or 128),
               Recipe(epochs=30, batch_size=128, lr=0.01),
               description="the paper's MNIST CNN (2 conv + 2 FC, hidden width 128)"),
        Preset("mnist-mlp", "mnist", lambda i, w: MLP(784, hidden=w or 128), Recipe(epochs=30, batch_size=128, lr=0.01),
               description="MLP(128) on MNIST (paper Table 3)"),
        Preset("cifar10-preactresnet18", "cifar10", lambda i, w: PreActResNet18(**_norm(i)), _CIFAR,
               description="PreActResNet18 on CIFAR-10 (Rice et al.)"),
        Preset("cifar10-wrn34", "cifar10", lambda i, w: WideResNet(34, w or 10, **_norm(i)), _CIFAR,
               description="WideResNet34-k on CIFAR-10 (k = width, 10)"),
        Preset("cifar100-preactresnet18", "cifar100", lambda i, w: PreActResNet18(**_norm(i)), _CIFAR,
               description="PreActResNet18 on CIFAR-100"),
        Preset("svhn-preactresnet18", "svhn", lambda i, w: PreActResNet18(**_norm(i)),
               replace(_CIFAR, lr=0.01, augmentation=False),
               description="PreActResNet18 on SVHN (lr 0.01 as in the paper)"),
    ]
}


def get_preset(name: str) -> Preset:
    """Look up a preset by name."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}")
    return PRESETS[name]
