"""examples/train_digits.py with the HuggingFace Trainer and a tiny ViT built from its config.

    advhooks benchmark-clean --preset digits-mlp --out clean.safetensors   # R*(0) of a clean digits model
    python examples/train_digits_hf.py --benchmark clean.safetensors --eps 8/255

The ViT is a different model from the benchmark's MLP, and the callback says so (it compares the Trainer's
model, batch size and learning rate with the benchmark's recipe and warns, naming each difference). For a
verdict that means something, record the ViT's own benchmark from a clean run of the same recipe
(`advhooks.CleanBenchmarkRecorder`, called after each epoch of a plain Trainer run; see the README).
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from transformers import TrainingArguments, ViTConfig, ViTForImageClassification  # transformers (1/3)

from advhooks import PGD, parse_eps
from advhooks.data import load_digits
from advhooks.integrations.transformers import AdversarialTrainer, PhaseMonitorCallback


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

    torch.manual_seed(args.seed)
    train_set, _ = load_digits(seed=0)
    # transformers (2/3): a tiny ViT from its config (no download)
    model = ViTForImageClassification(ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32,
                                                num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                                num_labels=10))
    callbacks = [PhaseMonitorCallback(args.benchmark, eps=eps, total_epochs=args.epochs)] if args.benchmark else []
    with tempfile.TemporaryDirectory() as out:
        # transformers (3/3): the Trainer with the adversarial mixin and the monitor callback
        trainer = AdversarialTrainer(
            model=model,
            args=TrainingArguments(output_dir=out, num_train_epochs=args.epochs, per_device_train_batch_size=64,
                                   learning_rate=args.lr, report_to=[], use_cpu=True, save_strategy="no",
                                   logging_strategy="epoch", disable_tqdm=True, seed=args.seed),
            train_dataset=PixelDataset(train_set), attack=PGD(eps, steps=args.steps), input_key="pixel_values",
            callbacks=callbacks)
        trainer.train()
    reports = callbacks[0].reports if callbacks else []
    if reports:
        print(f"final: ratio {reports[-1].ratio:.3f}, regime {reports[-1].regime}")
    return reports


if __name__ == "__main__":
    main()
