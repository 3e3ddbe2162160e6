"""The FGSM instability threshold (the paper's Table 2): plain FGSM training at increasing ε until the catastrophic
overfitting detector fires."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ...attacks import FGM
from ...benchmark import Recipe
from ...diagnostics import CatastrophicOverfittingDetector
from ...schedules import format_eps
from ..estimate import check_eps_grid
from ..training import train_adversarially


def fgsm_threshold(model_factory: Callable[[], nn.Module], train_set: Dataset, check_set: Dataset,
                   eps: Sequence[float], *, epochs: int, lr: float, batch_size: int, seed: int = 0,
                   check_size: int = 512, device: torch.device | str = "cpu",
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The smallest ε of ``eps`` at which plain FGSM training overfits catastrophically (the paper's Table 2).

    At each ε in increasing order: a model from ``model_factory`` (under ``seed``) trained with FGSM (FGM in
    L∞, no random start) for ``epochs`` at a constant ``lr``, and after each epoch the catastrophic-overfitting
    detector on a fixed check batch of ``check_set`` (PGD-10 against FGSM accuracy). The ladder stops at the
    first ε whose run is flagged. Returns ``{"threshold", "stable_below", "runs"}``: the first flagged ε
    (``None``: none fired), the largest ε below it that stayed stable, and each run's flag epoch and final
    accuracies.
    """
    ladder = check_eps_grid(eps, "fgsm eps")
    xs, ys = zip(*(check_set[i] for i in range(min(check_size, len(check_set)))), strict=True)
    inputs, targets = torch.stack(xs).to(device), torch.as_tensor(ys).to(device)
    out: dict[str, Any] = {"threshold": None, "stable_below": None, "runs": [], "epochs": epochs}
    for e in ladder:
        torch.manual_seed(seed)
        model = model_factory().to(device)
        detector = CatastrophicOverfittingDetector(inputs, targets, e)
        loader = DataLoader(train_set, batch_size=batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        train_adversarially(model, loader, FGM(e, norm="linf"), e, Recipe(epochs=epochs, lr=lr, schedule="constant"),
                            device=device,
                            on_epoch=lambda record: detector.epoch_end(model).flag_epoch is not None)  # noqa: B023
        out["runs"].append({"eps": e, "flag_epoch": detector.flag_epoch, "epochs_run": len(detector.pgd_accuracy),
                            "pgd_accuracy": detector.pgd_accuracy[-1], "fgsm_accuracy": detector.fgsm_accuracy[-1],
                            "best_pgd_accuracy": max(detector.pgd_accuracy)})
        if progress:
            progress(f"FGSM at eps {format_eps(e)}: " + (f"catastrophic overfitting at epoch {detector.flag_epoch}"
                                                        if detector.flag_epoch else "stable"))
        if detector.flag_epoch is not None:
            out["threshold"] = e
            break
        out["stable_below"] = e
    return out


