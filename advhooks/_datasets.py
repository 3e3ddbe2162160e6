"""Dataset helpers shared by the core (the benchmark's dataset fingerprint) and the kit's loaders."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

__all__ = ["labels_of"]


def labels_of(dataset: Dataset) -> torch.Tensor:
    """All labels of a classification dataset as an int64 tensor (fast paths: tensors, ``targets``, ``labels``)."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[1].long()
    for attr in ("targets", "labels"):
        value = getattr(dataset, attr, None)
        if value is not None:
            return torch.as_tensor(np.asarray(value)).long()
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)
