"""examples/train_digits.py with Lightning: the same model, data, optimiser and learning-rate schedule.

A LightningModule whose adversarial ``training_step`` comes from ``AdversarialTrainingMixin`` and a
``Trainer`` replace the hand-written loop, and ``PhaseMonitorCallback`` feeds the monitor (the
`lightning (k/3)` comments mark these parts). The callback evaluates the paper's verdict at each epoch's
end (θ̂ by the PGD-10 test loss, R̂ at θ̂'s fixed weights on 512 training samples) and logs it with
``pl_module.log_dict``; the script prints the adversarial training loss and the monitor's ratio each epoch.

    advhooks benchmark-clean --preset digits-mlp --out clean.safetensors
    python examples/train_digits_lightning.py --benchmark clean.safetensors --eps 16/255
"""

from __future__ import annotations

import argparse
import json
import time

import lightning as L  # lightning (1/3)
import torch
from torch.utils.data import DataLoader

from advhooks import PGD, parse_eps
from advhooks.errors import one_line_errors
from advhooks.integrations.accelerate import finish
from advhooks.integrations.lightning import AdversarialTrainingMixin, PhaseMonitorCallback
from advhooks.kit.data import load_digits
from advhooks.kit.presets import get_preset
from advhooks.schedules import step_decay


# lightning (2/3): the model as a LightningModule; the mixin supplies the adversarial training_step
class LitDigits(AdversarialTrainingMixin, L.LightningModule):
    def __init__(self, eps: float, steps: int, objective: str, lr: float, epochs: int, width: int | None) -> None:
        super().__init__()
        self.net = get_preset("digits-mlp").model(width)
        self.lr, self.epochs = lr, epochs
        self.configure_adversarial(PGD(eps, steps=steps), objective=objective)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: step_decay(e, self.epochs))
        return [opt], [sched]


class EpochLine(L.Callback):
    """One line per epoch: the adversarial training loss the mixin logs (and the monitor's ratio, if any)."""

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        line = f"epoch {trainer.current_epoch + 1:3d}  adv train loss {float(m['train/adv_loss']):.4f}"
        if "advhooks/ratio" in m:
            line += f"  ratio {float(m['advhooks/ratio']):.3f}"
        print(line, flush=True)


@one_line_errors  # bad input (an eps of 8 meant as 8/255, a missing file): one line, exit 2
def main(argv: list[str] | None = None) -> list:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eps", default="8/255")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--objective", choices=["at", "trades", "mart"], default="at")
    p.add_argument("--benchmark")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--devices", type=int, default=1, help="processes (DDP on the CPU when > 1); the global batch "
                   "stays 64, the benchmark's")
    p.add_argument("--report-json", help="write the final report (report.to_dict()) here (JSON, main process)")
    args = p.parse_args(argv)
    eps = parse_eps(args.eps)
    if args.devices < 1 or 64 % args.devices:
        raise ValueError(f"--devices {args.devices} must divide the global batch of 64 (the benchmark's)")

    L.seed_everything(args.seed)
    train_set, test_set = load_digits(seed=0)
    loader = DataLoader(train_set, batch_size=64 // args.devices, shuffle=True)  # Lightning shards it per process
    model = LitDigits(eps, args.steps, args.objective, args.lr, args.epochs, args.width)
    # lightning (3/3): the monitor as a callback, the loop as a Trainer
    callbacks = ([PhaseMonitorCallback(args.benchmark, eps=eps, eval_data=(train_set, test_set))]
                 if args.benchmark else [])
    callbacks.append(EpochLine())
    trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=args.devices, callbacks=callbacks,
                        strategy="ddp" if args.devices > 1 else "auto", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    started = time.perf_counter()
    trainer.fit(model, loader)
    seconds = time.perf_counter() - started
    reports = callbacks[0].reports if args.benchmark else []
    if reports and trainer.is_global_zero:
        share = sum(callbacks[0].monitor.evaluation_seconds.values()) / seconds
        print(f"final: {reports[-1].summary()}; the monitor's evaluation took {100 * share:.1f} % of the training time")
        if args.report_json:  # machine-readable: the final report (benchmarks/every_path.py reads it)
            with open(args.report_json, "w") as fh:
                json.dump(reports[-1].to_dict(), fh, indent=2)
    return reports


if __name__ == "__main__":
    main()
    finish()  # with --devices > 1: all processes meet and exit here (see its docs)
