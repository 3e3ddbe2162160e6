"""Run under `accelerate launch`: the monitor's reduced epoch mean against a gather of every batch.

Writes JSON (main process) with the monitor's epoch means and the single-process means recomputed from every
rank's per-sample losses gathered with ``gather_for_metrics`` (which drops the samples Accelerate repeats to pad
the last global batch: 300 samples in global batches of 64 leave 44 real ones in the last).
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
        losses = []
        for x, y in loader:
            out = adv(x, y)
            opt.zero_grad()
            accelerator.backward(out.loss)
            opt.step()
            losses.append(accelerator.gather_for_metrics(out.adv_losses.double()))  # every real sample, once
        everything = torch.cat(losses)
        assert everything.numel() == len(train)
        recomputed.append(float(everything.mean()))
        report = adv.epoch_end()
        assert report.samples == len(train), report.samples
        means.append(report.adv_train_loss)
    if accelerator.is_main_process:
        with open(out_path, "w") as fh:
            json.dump({"monitor": means, "recomputed": recomputed, "processes": accelerator.num_processes}, fh)
    finish(accelerator)


if __name__ == "__main__":
    main(sys.argv[1])
