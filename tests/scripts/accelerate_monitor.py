"""Run under `accelerate launch`: the monitor's reduced epoch mean against a gather of every batch.

Writes JSON (main process) with the monitor's epoch means and the single-process means recomputed from
all ranks' per-batch (loss sum, count) pairs gathered to every process.
"""

import json
import sys

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from advhooks import PGD
from advhooks.integrations.accelerate import AcceleratedAdversarialTraining, finish
from advhooks.kit.data import load_digits
from advhooks.kit.presets import get_preset
from advhooks.monitor import PhaseMonitor


def main(out_path: str) -> None:
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(0)
    train, _ = load_digits()
    train = torch.utils.data.Subset(train, range(300))
    model = get_preset("digits-mlp").model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = DataLoader(train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    model, opt, loader = accelerator.prepare(model, opt, loader)
    monitor = PhaseMonitor(0.1, eps=8 / 255)
    adv = AcceleratedAdversarialTraining(accelerator, model, PGD(8 / 255, steps=3), monitor=monitor)
    means, recomputed = [], []
    for _ in range(2):
        sums = []
        for x, y in loader:
            out = adv(x, y)
            opt.zero_grad()
            accelerator.backward(out.loss)
            opt.step()
            sums.append(torch.stack([out.adv_loss.double() * out.batch_size, torch.tensor(out.batch_size).double()]))
        local = torch.stack(sums)
        everything = accelerator.gather(local)  # every rank's batches
        recomputed.append(float(everything[:, 0].sum() / everything[:, 1].sum()))
        means.append(adv.epoch_end().adv_train_loss)
    if accelerator.is_main_process:
        with open(out_path, "w") as fh:
            json.dump({"monitor": means, "recomputed": recomputed, "processes": accelerator.num_processes}, fh)
    finish(accelerator)


if __name__ == "__main__":
    main(sys.argv[1])
