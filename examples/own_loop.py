"""Your own CIFAR-style training script (as in Rice et al.'s robust_overfitting train_cifar.py), ported.

One loop, two phases. With --eps 0 it trains cleanly and records its own clean benchmark R*(0) (the
paper's early stopping: the epoch with the smallest clean test loss); with --eps > 0 it trains
adversarially with the very same recipe, watched by the PhaseMonitor against that benchmark. Every line
advhooks adds to the clean script is marked `# advhooks (k/5)`: a marked line with the block it opens, a
marked comment with the lines below it up to the next blank line.

    python examples/own_loop.py --eps 0 --benchmark own-clean.safetensors                 # once: R*(0)
    python examples/own_loop.py --eps 8/255 --benchmark own-clean.safetensors --save-record run.json

Default data: the bundled 8×8 digits upsampled to 32×32 and repeated to 3 channels (CIFAR's shape, no
download); --data-dir DIR reads CIFAR-10 from DIR/cifar-10-batches-bin or DIR/cifar-10-batches-py. As in
most CIFAR scripts the inputs are normalised outside the model, so the attacks take
normalization=(mean, std) and ε stays in pixel units.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from advhooks import PGD, AdversarialStep, CleanBenchmarkRecorder, PhaseMonitor, RunSetup, parse_eps  # advhooks (1/5)
from advhooks.errors import one_line_errors
from advhooks.kit.data import DATASETS, load_cifar10, load_digits
from advhooks.kit.models import PreActResNet18
from advhooks.robustness import robust_accuracy  # advhooks (1/5)
from advhooks.schedules import step_decay

MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4


class CifarLike(Dataset):
    """uint8 images (N, 3, 32, 32) served normalised, optionally augmented with a seeded generator."""

    def __init__(self, images, labels, mean, std, crop=False, flip=False, seed=0):
        self.images, self.labels, self.crop, self.flip = images, labels, crop, flip
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
        self.gen = torch.Generator().manual_seed(seed)  # advances: new crops and flips every epoch

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        img = self.images[i].float() / 255
        if self.crop:  # random crop with padding 4
            top, left = torch.randint(0, 9, (2,), generator=self.gen).tolist()
            img = F.pad(img, (4, 4, 4, 4))[:, top : top + 32, left : left + 32]
        if self.flip and torch.rand((), generator=self.gen) < 0.5:  # horizontal flip
            img = img.flip(-1)
        return (img - self.mean) / self.std, self.labels[i]


def small_cnn(num_classes=10):
    """Two strided convolutions and two fully connected layers: PGD training in seconds on a CPU."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(32 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, num_classes))


def load_data(args):
    """uint8 train/test images and labels, the per-channel mean/std and the augmentation's name."""
    if args.data_dir:
        train, test = load_cifar10(args.data_dir)
        info = DATASETS["cifar10"]
        data = train.images, train.labels, test.images, test.labels
        return (*data, list(info.mean), list(info.std), "crop+flip")
    train, test = load_digits(seed=0)  # 8×8 in [0, 1] -> 32×32 uint8, 3 channels: CIFAR's shape

    def to_cifar_shape(x):
        x = F.interpolate(x, size=32, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
        return (x * 255).round().to(torch.uint8)

    train_x = to_cifar_shape(train.tensors[0])
    pixels = train_x.float() / 255
    mean = [round(float(v), 4) for v in pixels.mean(dim=(0, 2, 3))]
    std = [round(float(v), 4) for v in pixels.std(dim=(0, 2, 3))]
    # A flipped digit is another glyph (or none), so the digits get the crop only; CIFAR gets both.
    return train_x, train.tensors[1], to_cifar_shape(test.tensors[0]), test.tensors[1], mean, std, "crop"


def make_recipe(args, n_train, mean, std, augmentation):  # advhooks (2/5)
    """How this script trains: one dict for the clean benchmark and the adversarial runs, so they compare.

    Lists, not tuples: the benchmark keeps the recipe as JSON, and a tuple would differ from its list."""
    return {"batch_size": args.batch_size, "epochs": args.epochs, "optimizer": "sgd", "lr": args.lr,
            "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY, "schedule": "step_decay",
            "augmentation": augmentation, "normalization": {"mean": mean, "std": std}, "n_train": n_train}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, attack=None, device="cpu"):
    """Mean loss and accuracy over ``loader``, on clean or attacked inputs (eval mode)."""
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        if attack is not None:
            x = attack(model, x, y)
        logits = model(x)
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        n += len(y)
    return total_loss / n, correct / n


@one_line_errors  # bad input (an eps of 8 meant as 8/255, a missing file): one line, exit 2
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="folder with cifar-10-batches-bin/ or -py/ (default: the bundled digits)")
    p.add_argument("--model", choices=["cnn", "preactresnet18"], default="cnn")
    p.add_argument("--epochs", type=int, default=30, help="30: the clean run's test loss has its minimum inside")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=None, help="default 0.05 (cnn), 0.1 (preactresnet18)")
    p.add_argument("--eps", type=parse_eps, default=0.0, help="L∞ strength in pixel units; 0: record R*(0)")
    p.add_argument("--steps", type=int, default=10, help="PGD steps of the training attack")
    p.add_argument("--benchmark", default="own-clean.safetensors",
                   help="written with --eps 0, read otherwise (not benchmark-clean's default name: a preset benchmark "
                        "is another recipe)")
    p.add_argument("--save-record", help="write the adversarial run's record (JSON) here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train-samples", type=int, default=None, help="train on the first N samples")
    args = p.parse_args(argv)
    args.lr = args.lr or (0.05 if args.model == "cnn" else 0.1)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    torch.manual_seed(args.seed)
    train_x, train_y, test_x, test_y, mean, std, augmentation = load_data(args)
    train_x, train_y = train_x[: args.max_train_samples], train_y[: args.max_train_samples]
    train_set = CifarLike(train_x, train_y, mean, std, crop=True, flip=augmentation == "crop+flip", seed=args.seed)
    test_set = CifarLike(test_x, test_y, mean, std)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(args.seed))
    test_loader = DataLoader(test_set, batch_size=256)
    model = (small_cnn() if args.model == "cnn" else PreActResNet18()).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: step_decay(e, args.epochs))
    print(f"{len(train_set)} train / {len(test_set)} test, {args.model}, {args.epochs} epochs, eps {args.eps:.4f}")

    # advhooks (2/5): the recipe, the training set without augmentation (for R̂ and Δ), then either the
    # recorder of R*(0) (ε = 0) or the attack (ε in pixel units on normalised inputs), step and monitor.
    recipe = make_recipe(args, len(train_set), mean, std, augmentation)
    train_eval_set = CifarLike(train_x, train_y, mean, std)
    if args.eps == 0:
        recorder = CleanBenchmarkRecorder(test_set, recipe=recipe, device=device)
    else:
        step = AdversarialStep(model, PGD(args.eps, steps=args.steps, normalization=(mean, std)))
        eval_attack = PGD(args.eps, steps=10, normalization=(mean, std))
        monitor = PhaseMonitor(args.benchmark, eps=args.eps, total_epochs=args.epochs, verbose=True,
                               recipe=recipe, setup=RunSetup(model=model), attack=eval_attack)
        monitor.evaluate_with(model, train_eval_set, device=device)  # R̂ at the early-stopped weights

    for epoch in range(1, args.epochs + 1):
        start, lr = time.perf_counter(), scheduler.get_last_lr()[0]
        model.train()
        train_loss, n = 0.0, 0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            if args.eps == 0:  # advhooks (3/5): the clean loss, or the adversarial one
                loss = F.cross_entropy(model(x), y)
            else:
                out = step(x, y)
                loss = out.loss
                monitor.update(out)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            train_loss += loss.item() * len(y)
            n += len(y)
        scheduler.step()
        test_loss, test_acc = evaluate(model, test_loader, device=device)
        line = (f"epoch {epoch:3d}  lr {lr:.4f}  train loss {train_loss / n:.4f}  test loss {test_loss:.4f} "
                f"acc {test_acc:.3f}")
        if args.eps == 0:  # advhooks (4/5): keep the best clean test loss's weights / PGD-10 test loss picks θ̂
            recorder.epoch_end(model)
        else:
            adv_loss, adv_acc = evaluate(model, test_loader, eval_attack, device=device)
            report = monitor.epoch_end(adv_test_loss=adv_loss)
            line += f"  PGD-10 test loss {adv_loss:.4f} acc {adv_acc:.3f}  ratio {report.ratio:.3f}"
        print(f"{line}  {time.perf_counter() - start:.1f} s", flush=True)

    if args.eps == 0:  # advhooks (5/5): save R*(0) of the best epoch / print the verdict, write the run record
        bench = recorder.finish(model, train_data=train_eval_set)
        bench.save(args.benchmark)
        print(f"R*(0) = {bench.clean_test_loss:.4f} ± {bench.test_loss_stderr:.4f} (clean test loss of epoch "
              f"{bench.best_epoch}/{args.epochs}, acc {bench.clean_test_accuracy:.3f}) -> {args.benchmark}")
    else:
        low, high = report.ratio_interval
        print(f"R*(0) = {monitor.clean_test_loss:.4f} from {args.benchmark}")
        print(f"final: ratio {report.ratio:.6f} [{low:.3f}, {high:.3f}] (R-hat {report.rhat:.4f}, "
              f"{report.rhat_kind}), regime {report.regime}, early-stopped epoch {report.early_stopped_epoch}")
        suite = robust_accuracy(model, test_set, args.eps, suite="fast", normalization=(mean, std), device=device)
        print(f"robust test accuracy (fast suite: APGD-CE, APGD-T) {suite.robust_accuracy:.3f}")
        if args.save_record:
            print(f"run record -> {monitor.save_record(args.save_record)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
