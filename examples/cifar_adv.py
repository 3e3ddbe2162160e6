"""Adversarial training in the paper's setting (PreActResNet18, CIFAR-10, PGD L∞) with Accelerate.

Compared with examples/train_digits.py (a plain loop on the bundled digits), it adds: training through
Accelerate on one process or several (the `accelerate (k/4)` comments mark the Accelerate calls), with
``AcceleratedAdversarialTraining`` reducing the monitor over processes; the monitor evaluates the paper's
verdict (θ̂ by the PGD-10 loss on 1,000 fixed test samples each epoch, R̂ at θ̂'s fixed weights on 512
training samples), every process taking its share; with --stop-on-flag every process stops when
eps >> eps* is flagged; CIFAR-10 with its preset's model, epochs, learning rate and weight decay
(--dataset digits for the bundled data); the PGD test accuracy and the robust accuracy by the fast suite
(APGD-CE, then APGD-T) gathered from every process once training ends; the monitor's reports as JSON
(--report).

One recipe whatever the number of processes: --batch-size is the global batch (each of N processes takes
batch/N), which is what the benchmark records, and the epoch-indexed learning-rate schedule is stepped by
this script, not prepared by Accelerate (a prepared scheduler steps N times per call: on 2 processes the
decays would come at half the epochs).

    accelerate launch examples/cifar_adv.py --data-dir ~/data --eps 8/255 --benchmark clean.safetensors
    accelerate launch --multi_gpu --num_processes 2 examples/cifar_adv.py --data-dir ~/data   # 2 processes
    python examples/cifar_adv.py --dataset digits --epochs 20                                  # embedded data

CIFAR-10 is read from DATA_DIR/cifar-10-batches-bin (binary version) or DATA_DIR/cifar-10-batches-py (the
python version torchvision downloads, read with an unpickler that can build only numpy arrays); without
either the script says where to put it, or fetches the binary version with --download. On a CPU-only
machine Accelerate starts several processes only with --multi_gpu (gloo backend); plain --num_processes N
runs one.
Record the benchmark first with the same preset: both then train with the preset's recipe (epochs, global
batch, learning rate, weight decay; give the same flags to both to change it, the monitor names every
difference it sees): `advhooks benchmark-clean --preset cifar10-preactresnet18 --data-dir ~/data` (or
`--preset digits-mlp` for --dataset digits).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from accelerate import Accelerator  # accelerate (1/4)
from torch.utils.data import DataLoader, Subset

from advhooks import PGD, parse_eps
from advhooks.errors import one_line_errors
from advhooks.integrations.accelerate import AcceleratedAdversarialTraining, finish
from advhooks.kit.data import DataNotFoundError, load_dataset
from advhooks.kit.presets import get_preset
from advhooks.monitor import PhaseMonitor
from advhooks.robustness import attack_batch
from advhooks.schedules import step_decay

PRESETS = {"cifar10": "cifar10-preactresnet18", "digits": "digits-mlp"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(PRESETS), default="cifar10")
    p.add_argument("--data-dir", default="./data", help="folder holding cifar-10-batches-bin/ or cifar-10-batches-py/")
    p.add_argument("--download", action="store_true", help="fetch CIFAR-10 (binary version) if missing")
    p.add_argument("--eps", default="8/255", help="L∞ strength, e.g. 8/255")
    p.add_argument("--steps", type=int, default=10, help="PGD steps")
    p.add_argument("--objective", choices=["at", "trades", "mart"], default="at")
    p.add_argument("--benchmark", help="clean benchmark (advhooks benchmark-clean) to watch against")
    p.add_argument("--stop-on-flag", action="store_true", help="stop all processes when eps >> eps* is flagged")
    p.add_argument("--epochs", type=int, default=None, help="default: the preset's (200 for CIFAR-10)")
    p.add_argument("--batch-size", type=int, default=None, help="the global batch (default: the preset's); each of "
                   "N processes takes batch-size / N")
    p.add_argument("--lr", type=float, default=None, help="default: the preset's")
    p.add_argument("--max-train-samples", type=int, default=None, help="use a subset (quick runs)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup-epochs", type=int, default=None, help="the monitor's warm-up (default: half the "
                   "epochs + 5)")
    p.add_argument("--report", help="write the monitor's reports here (JSON, main process)")
    return p.parse_args(argv)


@one_line_errors  # bad input (an eps of 8 meant as 8/255, a missing file): one line, exit 2
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    eps = parse_eps(args.eps)
    attack = PGD(eps, steps=args.steps)  # checked here, before any work (an eps of 8 meant as 8/255 is refused)
    # accelerate (2/4); on a machine without GPUs, cpu=True lets several processes run with gloo
    accelerator = Accelerator(cpu=args.cpu or not torch.cuda.is_available())
    preset = get_preset(PRESETS[args.dataset])
    recipe = preset.recipe.with_given(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size)
    if recipe.batch_size % accelerator.num_processes:
        accelerator.print(f"error: --batch-size {recipe.batch_size} (the global batch) must be a multiple of the "
                          f"{accelerator.num_processes} processes", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    try:
        train_set, test_set = load_dataset(preset.dataset, args.data_dir, download=args.download,
                                           augment=preset.recipe.augmentation, seed=0)  # the split benchmark-clean uses
        plain_train_set = (load_dataset(preset.dataset, args.data_dir, seed=0)[0] if preset.recipe.augmentation
                           else train_set)  # the monitor's R̂ is evaluated without augmentation
    except DataNotFoundError as err:
        accelerator.print(f"error: {err}", file=sys.stderr)
        return 2
    if args.max_train_samples:
        kept = range(min(args.max_train_samples, len(train_set)))
        train_set, plain_train_set = Subset(train_set, kept), Subset(plain_train_set, kept)
    epochs, lr = recipe.epochs, recipe.lr
    model = preset.model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    # Stepped once per epoch below and not prepared: a prepared scheduler steps once per process per call.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: step_decay(e, epochs))
    train_loader = DataLoader(train_set, batch_size=recipe.batch_size // accelerator.num_processes, shuffle=True,
                              generator=torch.Generator().manual_seed(args.seed))
    test_loader = DataLoader(test_set, batch_size=256)
    # accelerate (3/4): prepare, then the adversarial step and the monitor wired to the accelerator
    model, optimizer, train_loader, test_loader = accelerator.prepare(model, optimizer, train_loader, test_loader)
    # The monitor names every way this run's recipe differs from the benchmark's (batch size, lr, model, data).
    monitor = (PhaseMonitor(args.benchmark, eps=eps, total_epochs=epochs, warmup_epochs=args.warmup_epochs,
                            verbose=True, recipe=recipe)
               if args.benchmark else None)
    if monitor is not None:  # θ̂ by the PGD-10 loss on 1,000 test samples, R̂ at its weights on 512 training samples
        monitor.evaluate_with(model, plain_train_set, test_set, test_subset=1000, device=accelerator.device)
    adv = AcceleratedAdversarialTraining(accelerator, model, attack, objective=args.objective,
                                         monitor=monitor, stop_on_flag=args.stop_on_flag)
    accelerator.print(f"{args.dataset}: {len(train_set)} train / {len(test_set)} test, {accelerator.num_processes} "
                      f"process(es) x batch {recipe.batch_size // accelerator.num_processes}, PGD-{args.steps} L∞ "
                      f"eps={args.eps} ({args.objective}), {epochs} epochs")
    reports, report, started = [], None, time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        loss_sum, seen = torch.zeros((), device=accelerator.device), 0
        for x, y in train_loader:
            out = adv(x, y)
            optimizer.zero_grad()
            accelerator.backward(out.loss)  # accelerate (4/4): backward through the accelerator
            optimizer.step()
            loss_sum += out.adv_loss * out.batch_size  # stays on the device: no sync per batch
            seen += out.batch_size
        scheduler.step()
        report = adv.epoch_end()
        if report is not None:
            reports.append({**report.to_dict(), "lr": scheduler.get_last_lr()[0]})
            accelerator.print(f"epoch {epoch:3d}  adv train loss {report.adv_train_loss:.4f}  ratio "
                              f"{report.ratio:.3f}  {report.regime}{' (provisional)' if report.provisional else ''}")
        else:  # no benchmark: this process's running mean of the adversarial training loss
            accelerator.print(f"epoch {epoch:3d}  adv train loss {float(loss_sum) / max(seen, 1):.4f}")
        if adv.should_stop():
            accelerator.print(f"stopping at epoch {epoch}: eps >> eps* was flagged")
            break
    training_seconds = time.perf_counter() - started
    if report is not None:
        share = sum(monitor.evaluation_seconds.values()) / training_seconds
        accelerator.print(f"final: {report.summary()}; the monitor's evaluation took {100 * share:.1f} % of the "
                          f"training time")
    correct = robust = total = 0
    model.eval()
    for x, y in test_loader:
        x_adv = attack(model, x, y)
        with torch.no_grad():
            logits = model(x_adv)
        _, masks = attack_batch(model, x, y, eps, suite="fast")  # APGD-CE, then APGD-T on what survives
        preds, labels, kept = accelerator.gather_for_metrics((logits.argmax(1), y, masks["apgd-t-20"]))
        correct += int((preds == labels).sum())
        robust += int(kept.sum())
        total += labels.numel()
    accelerator.print(f"PGD-{args.steps} test accuracy {correct / max(total, 1):.3f}; robust test accuracy "
                      f"(fast suite: APGD-CE, APGD-T) {robust / max(total, 1):.3f}")
    if args.report and accelerator.is_main_process:
        with open(args.report, "w") as fh:
            json.dump({"reports": reports, "num_processes": accelerator.num_processes}, fh, indent=2)
    finish(accelerator)  # all processes meet and exit here when there are several (see finish)
    return 0


if __name__ == "__main__":
    sys.exit(main())
