"""examples/train_digits.py with the HuggingFace Trainer and a tiny ViT built from its config.

    python examples/train_digits_hf.py --benchmark vit-clean.safetensors --eps 8/255

The clean benchmark must be the ViT's own, trained with the same recipe: when the --benchmark file does not
exist yet, the script first trains the ViT cleanly with a plain Trainer and records it with
``CleanBenchmarkCallback`` (the paper's early stopping on the clean test loss), then trains adversarially
with the same TrainingArguments under the ``PhaseMonitorCallback`` (which compares the two recipes and
warns, naming each difference, if they ever part).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification  # transformers (1/3)

from advhooks import PGD, parse_eps
from advhooks.integrations.transformers import AdversarialTrainer, CleanBenchmarkCallback, PhaseMonitorCallback
from advhooks.kit.data import load_digits


class PixelDataset(torch.utils.data.Dataset):
    """(image, label) pairs as the dicts the Trainer expects."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return {"pixel_values": x, "labels": y}


def main(argv: list[str] | None = None) -> list:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eps", default="8/255")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--benchmark")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    eps = parse_eps(args.eps)

    train_set, test_set = load_digits(seed=0)

    def vit():  # transformers (2/3): a tiny ViT from its config (no download)
        torch.manual_seed(args.seed)
        return ViTForImageClassification(ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32,
                                                   num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                                   num_labels=10))

    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(output_dir=out, num_train_epochs=args.epochs, per_device_train_batch_size=64,
                                          learning_rate=args.lr, report_to=[], use_cpu=True, save_strategy="no",
                                          logging_strategy="epoch", disable_tqdm=True, seed=args.seed)
        if args.benchmark and not os.path.exists(args.benchmark):  # the ViT's own R*(0), same recipe, eps = 0
            recorder = CleanBenchmarkCallback(PixelDataset(test_set), args.benchmark,
                                              train_dataset=PixelDataset(train_set))
            Trainer(model=vit(), args=training_args, train_dataset=PixelDataset(train_set),
                    callbacks=[recorder]).train()
            print(f"clean benchmark: R*(0) = {recorder.benchmark.clean_test_loss:.4f} "
                  f"(epoch {recorder.benchmark.best_epoch}) -> {args.benchmark}")
        callbacks = [PhaseMonitorCallback(args.benchmark, eps=eps, total_epochs=args.epochs)] if args.benchmark else []
        # transformers (3/3): the Trainer with the adversarial mixin and the monitor callback
        trainer = AdversarialTrainer(model=vit(), args=training_args, train_dataset=PixelDataset(train_set),
                                     attack=PGD(eps, steps=args.steps), input_key="pixel_values", callbacks=callbacks)
        trainer.train()
    reports = callbacks[0].reports if callbacks else []
    if reports:
        low, high = reports[-1].ratio_interval
        print(f"final: ratio {reports[-1].ratio:.3f} [{low:.3f}, {high:.3f}], regime {reports[-1].regime}")
    return reports


if __name__ == "__main__":
    main()
