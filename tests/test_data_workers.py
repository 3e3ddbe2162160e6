"""ImageArrayDataset's augmentation under DataLoader workers: new per worker and per epoch, yet reproducible."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from advhooks.kit.data import ImageArrayDataset


def _dataset(seed: int = 0) -> ImageArrayDataset:
    # 16 identical images with distinct pixels: any two different crops/flips give different tensors.
    image = torch.arange(3 * 8 * 8, dtype=torch.uint8).reshape(1, 3, 8, 8)
    return ImageArrayDataset(image.repeat(16, 1, 1, 1), torch.zeros(16, dtype=torch.long), augment=True, seed=seed)


def _run(num_workers: int, *, seed: int = 0, loader_seed: int = 0, epochs: int = 2,
         persistent: bool = False) -> list[torch.Tensor]:
    """Each epoch's batches, stacked: ``(batches, batch_size, 3, 8, 8)``."""
    loader = DataLoader(_dataset(seed), batch_size=4, shuffle=True, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(loader_seed),
                        persistent_workers=persistent)
    return [torch.stack([x for x, _ in loader]) for _ in range(epochs)]


@pytest.mark.parametrize("num_workers,persistent", [(0, False), (2, False), (2, True)],
                         ids=["main-process", "2-workers", "2-persistent-workers"])
def test_augmentation_differs_across_epochs_and_is_reproducible(num_workers, persistent):
    first = _run(num_workers, persistent=persistent)
    assert not torch.equal(first[0], first[1]), "epoch 2 repeated epoch 1's crops and flips"
    again = _run(num_workers, persistent=persistent)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True)), "same seeds gave different batches"


def test_workers_do_not_repeat_each_other():
    (epoch,) = _run(2, epochs=1)
    # In-order loading: worker 0 makes batches 0 and 2, worker 1 batches 1 and 3.
    assert not torch.equal(epoch[0], epoch[1]) and not torch.equal(epoch[2], epoch[3])
    # The samples within a batch differ too (identical images, so only the augmentation tells them apart).
    assert len({tuple(x.flatten().tolist()) for x in epoch.flatten(0, 1)}) > 8


def test_seeds_change_the_augmentation():
    base = _run(2, epochs=1)[0]
    assert not torch.equal(base, _run(2, epochs=1, loader_seed=1)[0])  # the loader's seed reaches the workers
    assert not torch.equal(base, _run(2, epochs=1, seed=1)[0])  # and so does the dataset's
    assert not torch.equal(_run(0, epochs=1)[0], _run(0, epochs=1, seed=1)[0])

