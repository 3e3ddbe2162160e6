"""DDP-wrapped models in a 2-process gloo group on the CPU.

The attack's forwards must neither fire DDP's gradient hooks nor leave it waiting for a reduction
("expected to have finished reduction in the prior iteration"), and the training backward must still
average gradients across ranks.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from advhooks import PGD, AdversarialStep
from advhooks.losses import trades_loss

from ._gloo import init_gloo, leave
from .conftest import SmallCNN


def _worker(rank: int, world: int, objective: str, out_dir: str) -> None:
    init_gloo(rank, world, out_dir)
    torch.manual_seed(0)
    model = SmallCNN()
    ddp = DDP(model)  # find_unused_parameters=False: attack forwards must not upset it
    step = AdversarialStep(ddp, PGD(8 / 255, steps=3), objective=objective)
    gen = torch.Generator().manual_seed(100 + rank)
    for _ in range(3):
        x, y = torch.rand(8, 1, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        ddp.zero_grad(set_to_none=True)
        out = step(x, y)
        out.loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    # The last step again without DDP, on the same adversarial inputs: DDP's gradient must be the
    # mean over ranks of these local gradients.
    local = SmallCNN()
    local.load_state_dict(model.state_dict())
    if objective == "at":
        loss = torch.nn.functional.cross_entropy(local(out.adv_inputs), y)
    else:
        loss = trades_loss(local(x), local(out.adv_inputs), y)
    local_grads = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(local.parameters()))])
    gathered = [torch.zeros_like(local_grads) for _ in range(world)]
    dist.all_gather(gathered, local_grads)
    all_grads = [torch.zeros_like(grads) for _ in range(world)]
    dist.all_gather(all_grads, grads)
    torch.save({"ddp": all_grads, "local": gathered}, os.path.join(out_dir, f"rank{rank}.pt"))
    leave()  # (no try/finally: a rank that failed must not leave the other waiting in a barrier)


@pytest.mark.parametrize("objective", ["at", "trades"])
def test_adversarial_step_under_ddp(tmp_path, objective):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    mp.spawn(_worker, args=(2, objective, str(tmp_path)), nprocs=2, join=True)
    result = torch.load(tmp_path / "rank0.pt", weights_only=True)
    ddp0, ddp1 = result["ddp"]
    torch.testing.assert_close(ddp0, ddp1)  # gradients were all-reduced
    mean_local = (result["local"][0] + result["local"][1]) / 2
    torch.testing.assert_close(ddp0, mean_local, rtol=1e-5, atol=1e-6)
