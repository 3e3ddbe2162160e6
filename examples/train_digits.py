"""Adversarial training in a plain PyTorch loop, on scikit-learn's bundled 8×8 digits (no download).

This is the base script the framework examples differ from. The three advhooks lines are marked.

    python examples/train_digits.py                       # PGD-10 L∞, ε = 8/255, standard AT
    python examples/train_digits.py --objective trades --eps 16/255
    python examples/train_digits.py --eps 0               # clean training, same loop
"""

from __future__ import annotations

import argparse
import logging
import time
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advhooks import PGD, AdversarialStep  # advhooks (1/3)

log = logging.getLogger("train_digits")


def load_digits_tensors(seed: int = 0, test_fraction: float = 0.25):
    """Digits as (N, 1, 8, 8) images in [0, 1], split with a fixed seed."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - message for users without the extra
        raise SystemExit("this example needs scikit-learn: pip install 'advhooks[demo]'") from err
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(y) * test_fraction)
    test, train = perm[:n_test], perm[n_test:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test])


def make_model(hidden: int = 64) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eps", type=lambda s: float(Fraction(s)), default=8 / 255, help="L∞ strength, e.g. 8/255")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--objective", choices=["at", "trades", "mart"], default="at")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    torch.manual_seed(args.seed)
    train_set, test_set = load_digits_tensors(args.seed)
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=256)
    model = make_model(args.hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

    attack = PGD(eps=args.eps, steps=args.steps)  # advhooks (2/3)
    step = AdversarialStep(model, attack, objective=args.objective)
    eval_attack = PGD(eps=args.eps, steps=20, restarts=2) if args.eps > 0 else None

    log.info("digits: %d train / %d test, PGD-%d L∞ eps=%.4f (%s)", len(train_set), len(test_set), args.steps,
             args.eps, args.objective)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        adv_loss_sum, n = 0.0, 0
        for x, y in train_loader:
            out = step(x, y)  # advhooks (3/3): replaces `loss = F.cross_entropy(model(x), y)`
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            adv_loss_sum += out.adv_loss.item() * out.batch_size
            n += out.batch_size
        if epoch % 5 == 0 or epoch == args.epochs:
            clean_loss, clean_acc = evaluate(model, test_loader)
            line = (f"epoch {epoch:3d}  adv train loss {adv_loss_sum / n:.4f}  "
                    f"clean test loss {clean_loss:.4f} acc {clean_acc:.3f}")
            if eval_attack is not None:
                rob_loss, rob_acc = evaluate(model, test_loader, eval_attack)
                line += f"  PGD-20 test loss {rob_loss:.4f} acc {rob_acc:.3f}"
            log.info(line)
    log.info("done in %.1f s", time.perf_counter() - start)


if __name__ == "__main__":
    main()
