"""The attack reads tensor values on the host a fixed number of times per call, never per iteration.

On a GPU every such read is a device synchronisation and breaks CUDA-graph capture; on the CPU the
same reads are visible at the dispatcher (``aten._local_scalar_dense``: ``.item()``, ``bool()``,
``float()``) and through ``Tensor.tolist``. Counting them here guards the house rule without a GPU.
"""

from __future__ import annotations

import pytest
import torch

from advhooks import FGM, PGD, AdversarialStep
from advhooks.monitor import PhaseMonitor
from advhooks.perf import count_host_reads

from .conftest import SmallCNN


def _count(fn) -> int:
    with count_host_reads() as reads:
        fn()
    return reads.count


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("bounds", ["unit", "none"])
def test_reads_do_not_grow_with_the_number_of_steps(norm, bounds, batch):
    model = SmallCNN().eval()
    x, y = batch
    kw = dict(norm=norm, bounds=None) if bounds == "none" else dict(norm=norm)
    one, many = PGD(0.1, steps=1, **kw), PGD(0.1, steps=20, **kw)  # (construction validates on the host)
    assert _count(lambda: one(model, x, y)) == 1  # the input check, before the loop
    assert _count(lambda: many(model, x, y)) == 1


def test_no_reads_at_all_with_out_of_bounds_clamp(batch):
    model = SmallCNN().eval()
    x, y = batch
    for attack in (PGD(0.1, steps=5, out_of_bounds="clamp"), FGM(0.1, random_start=True, out_of_bounds="clamp"),
                   PGD(0.1, steps=5, restarts=3, out_of_bounds="clamp")):
        assert _count(lambda a=attack: a(model, x, y)) == 0


def test_a_training_step_and_the_monitor_update_add_no_reads(batch):
    model = SmallCNN()
    x, y = batch
    monitor = PhaseMonitor(0.5)
    step = AdversarialStep(model, PGD(0.1, steps=5, out_of_bounds="clamp"), objective="trades")

    def train_step() -> None:
        out = step(x, y)
        out.loss.backward()
        monitor.update(out)

    assert _count(train_step) == 0


def test_the_counter_sees_a_read():
    t = torch.ones(3)
    assert _count(lambda: (t.sum().item(), bool(t.any()), t.tolist())) == 3
