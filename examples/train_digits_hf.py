"""examples/train_digits.py with the HuggingFace Trainer: the digits MLP behind the Trainer's model interface.

    python examples/train_digits_hf.py --benchmark hf-clean.safetensors --eps 8/255

The clean benchmark must come from the same model and TrainingArguments: when the --benchmark file does not
exist yet, the script first trains the model cleanly with a plain Trainer and records it with
``CleanBenchmarkCallback`` (the paper's early stopping on the clean test loss), then trains adversarially
with the same TrainingArguments under the ``PhaseMonitorCallback``. The callback evaluates the paper's
verdict at each epoch's end (θ̂ by the PGD-10 loss on the ``eval_dataset``, R̂ at θ̂'s fixed weights on 512
training samples), logs it through the Trainer (``advhooks/ratio``, ``advhooks/regime``,
``advhooks/provisional`` ... in ``trainer.state.log_history`` and every ``report_to`` tracker), and warns,
naming each difference, if the two recipes ever part.

Any ``transformers`` model works the same way; a ViT, for instance (``input_key="pixel_values"``):

    model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=4, num_labels=10))
    AdversarialTrainer(model=model, args=args, train_dataset=train, eval_dataset=test, attack=PGD(8 / 255),
                       input_key="pixel_values", callbacks=[PhaseMonitorCallback("vit-clean.safetensors",
                                                                                 eps=8 / 255)])
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainingArguments  # transformers (1/3)

from advhooks import PGD, parse_eps
from advhooks.errors import one_line_errors
from advhooks.integrations.accelerate import finish
from advhooks.integrations.transformers import AdversarialTrainer, CleanBenchmarkCallback, PhaseMonitorCallback
from advhooks.kit.data import load_digits
from advhooks.kit.presets import get_preset


class PixelDataset(torch.utils.data.Dataset):
    """(image, label) pairs as the dicts the Trainer expects."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return {"pixel_values": x, "labels": y}


class DigitsClassifier(nn.Module):  # transformers (2/3): a model with the Trainer's interface
    """The digits-mlp preset's network, called as ``model(pixel_values, labels=...)`` and returning a dict."""

    def __init__(self, width: int | None = None) -> None:
        super().__init__()
        self.net = get_preset("digits-mlp").model(width)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        logits = self.net(pixel_values)
        return {"logits": logits} if labels is None else {"logits": logits, "loss": F.cross_entropy(logits, labels)}


@one_line_errors  # bad input (an eps of 8 meant as 8/255, a missing file): one line, exit 2
def main(argv: list[str] | None = None) -> list:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eps", default="8/255")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--benchmark")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    eps = parse_eps(args.eps)

    train_set, test_set = load_digits(seed=0)
    train, test = PixelDataset(train_set), PixelDataset(test_set)

    def model():
        torch.manual_seed(args.seed)
        return DigitsClassifier()

    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(output_dir=out, num_train_epochs=args.epochs, per_device_train_batch_size=64,
                                          learning_rate=args.lr, report_to=[], use_cpu=True, save_strategy="no",
                                          logging_strategy="epoch", disable_tqdm=True, seed=args.seed)
        if args.benchmark and not os.path.exists(args.benchmark):  # the model's own R*(0), same recipe, eps = 0
            recorder = CleanBenchmarkCallback(test, args.benchmark, train_dataset=train)
            clean = Trainer(model=model(), args=training_args, train_dataset=train, callbacks=[recorder])
            clean.train()
            clean.accelerator.wait_for_everyone()  # the main process writes the file the others read next
            if clean.is_world_process_zero():
                print(f"clean benchmark: R*(0) = {recorder.benchmark.clean_test_loss:.4f} "
                      f"(epoch {recorder.benchmark.best_epoch}) -> {args.benchmark}")
        callbacks = [PhaseMonitorCallback(args.benchmark, eps=eps)] if args.benchmark else []
        # transformers (3/3): the Trainer with the adversarial mixin, the monitor callback and the evaluation set
        trainer = AdversarialTrainer(model=model(), args=training_args, train_dataset=train, eval_dataset=test,
                                     attack=PGD(eps, steps=args.steps), input_key="pixel_values", callbacks=callbacks)
        seconds = trainer.train().metrics["train_runtime"]
    reports = callbacks[0].reports if callbacks else []
    if reports and trainer.is_world_process_zero():
        share = sum(callbacks[0].monitor.evaluation_seconds.values()) / seconds
        print(f"final: {reports[-1].summary()}; the monitor's evaluation took {100 * share:.1f} % of the training time")
    return reports


if __name__ == "__main__":
    main()
    finish()  # on several processes (accelerate launch): all meet and exit here (see its docs)
