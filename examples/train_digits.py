"""Adversarial training in a plain PyTorch loop on the bundled 8×8 digits, watched by the PhaseMonitor.

The framework examples (cifar_adv.py, train_digits_lightning.py) start from this loop; the lines
advhooks adds to a plain loop are marked.

    advhooks benchmark-clean --preset digits-mlp --out clean.safetensors    # once: R*(0)
    python examples/train_digits.py --benchmark clean.safetensors --eps 8/255
    python examples/train_digits.py --benchmark clean.safetensors --eps 64/255 --objective trades
    python examples/train_digits.py                                        # no benchmark: AT only
    # the run record with the early-stopped weights, then the paper's Figure 4 against the clean model:
    python examples/train_digits.py --benchmark clean.safetensors --eps 64/255 --save-record runs/eps64.json
    advhooks connectivity --benchmark clean.safetensors --checkpoint runs/eps64.json --plot connectivity.png
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from advhooks import PGD, AdversarialStep, RunSetup, parse_eps  # advhooks (1/4)
from advhooks.errors import one_line_errors
from advhooks.kit.data import load_digits
from advhooks.kit.presets import get_preset
from advhooks.monitor import PhaseMonitor
from advhooks.robustness import robust_accuracy
from advhooks.schedules import step_decay

log = logging.getLogger("train_digits")


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, attack: PGD | None = None) -> tuple[float, float]:
    """Mean loss and accuracy over ``loader``, on clean or attacked inputs."""
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    for x, y in loader:
        if attack is not None:
            x = attack(model, x, y)
        logits = model(x)
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        n += len(y)
    return total_loss / n, correct / n


@one_line_errors  # bad input (an eps of 8 meant as 8/255, a missing file): one line, exit 2
def main(argv: list[str] | None = None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eps", type=parse_eps, default=8 / 255, help="L∞ strength, e.g. 8/255")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--objective", choices=["at", "trades", "mart"], default="at")
    parser.add_argument("--benchmark", help="clean benchmark file from `advhooks benchmark-clean`")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--width", type=int, default=None, help="hidden width of the digits-mlp preset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-record", help="with --benchmark: write the run record here, with the early-stopped "
                        "weights beside it (what `advhooks connectivity --checkpoint` reads)")
    parser.add_argument("--report-json", help="with --benchmark: write the final report (report.to_dict()) here")
    args = parser.parse_args(argv)
    if args.save_record and not args.benchmark:
        parser.error("--save-record needs --benchmark (the record is the monitor's)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    torch.manual_seed(args.seed)
    train_set, test_set = load_digits(seed=0)  # the split benchmark-clean uses
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=256)
    model = get_preset("digits-mlp").model(args.width)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    # The clean benchmark's schedule, so the adversarial run compares with it like for like.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: step_decay(e, args.epochs))

    attack = PGD(eps=args.eps, steps=args.steps)  # advhooks (2/4)
    step = AdversarialStep(model, attack, objective=args.objective)
    monitor = None
    if args.benchmark:  # advhooks (3/4): watch R̂(θ_t, ε) against R*(0)
        monitor = PhaseMonitor(args.benchmark, eps=args.eps, total_epochs=args.epochs, verbose=True,
                               recipe={"batch_size": 64, "lr": args.lr}, setup=RunSetup(model=model),
                               attack=PGD(eps=args.eps, steps=10))
        monitor.evaluate_with(model, train_set, test_set)  # θ̂ by adversarial test loss; R̂ at its weights
        log.info("R*(0) = %.4f from %s", monitor.clean_test_loss, args.benchmark)
    eval_attack = PGD(eps=args.eps, steps=20) if args.eps > 0 else None

    log.info("digits: %d train / %d test, PGD-%d L∞ eps=%.4f (%s)", len(train_set), len(test_set), args.steps,
             args.eps, args.objective)
    start = time.perf_counter()
    reports = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        for x, y in train_loader:
            out = step(x, y)  # advhooks (4/4): replaces `loss = F.cross_entropy(model(x), y)`
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            if monitor is not None:
                monitor.update(out)
        scheduler.step()
        if monitor is not None:
            reports.append(monitor.epoch_end())  # logs the ratio and the regime each epoch
        if epoch % 10 == 0 or epoch == args.epochs:
            clean_loss, clean_acc = evaluate(model, test_loader)
            line = f"epoch {epoch:3d}  clean test loss {clean_loss:.4f} acc {clean_acc:.3f}"
            if eval_attack is not None:
                rob_loss, rob_acc = evaluate(model, test_loader, eval_attack)
                line += f"  PGD-20 test loss {rob_loss:.4f} acc {rob_acc:.3f}"
            log.info(line)
    training_seconds = time.perf_counter() - start
    if args.eps > 0:  # a stronger check than PGD-20: APGD-CE then APGD-T, with the cheap "fast" settings
        suite = robust_accuracy(model, test_set, args.eps, suite="fast")
        log.info("robust test accuracy (fast suite: APGD-CE, APGD-T) %.3f", suite.robust_accuracy)
    if reports:
        share = sum(monitor.evaluation_seconds.values()) / training_seconds
        log.info("final: %s; the monitor's evaluation took %.1f %% of the training time", reports[-1].summary(),
                 100 * share)
    if reports and args.report_json:  # machine-readable: the final report (benchmarks/every_path.py reads it)
        with open(args.report_json, "w") as fh:
            json.dump(reports[-1].to_dict(), fh, indent=2)
    if monitor is not None and args.save_record:
        log.info("wrote %s", monitor.save_record(args.save_record, weights=True))
    log.info("done in %.1f s", time.perf_counter() - start)
    return reports


if __name__ == "__main__":
    main()
