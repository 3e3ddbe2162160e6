"""examples/train_digits.py with the HuggingFace Trainer: the digits MLP behind the Trainer's model interface.

    advhooks benchmark-clean --preset digits-mlp --out clean.safetensors      # the shared benchmark
    python examples/train_digits_hf.py --benchmark clean.safetensors --eps 8/255
    accelerate launch --multi_gpu --num_processes 2 examples/train_digits_hf.py --benchmark clean.safetensors
    python examples/train_digits_hf.py --benchmark hf-clean.safetensors      # the Trainer's own recipe

The adversarial run must train with the clean benchmark's recipe, so the script reads it from the --benchmark
file (epochs, global batch, learning rate, optimiser, schedule; --epochs, --lr and --batch-size replace a
value, and the monitor then names the difference). A benchmark of `advhooks benchmark-clean` records SGD with
momentum and the paper's epoch-indexed step decay: the script hands the Trainer that optimiser and the decay as
a per-step LambdaLR (``optimizers=(opt, sched)``), with no gradient clipping, as the benchmark trained. One
recipe whatever the number of processes: --batch-size is the global batch (each of N processes takes batch/N)
and a global batch that N does not divide is refused.

When the --benchmark file does not exist yet, the script first trains the model cleanly with a plain Trainer
and the Trainer's own recipe (AdamW, linear decay, 20 epochs, lr 0.01, global batch 64) and records it with
``CleanBenchmarkCallback`` (the paper's early stopping on the clean test loss), then trains adversarially with
the same TrainingArguments under the ``PhaseMonitorCallback``. The callback evaluates the paper's verdict at
each epoch's end (θ̂ by the PGD-10 loss on the ``eval_dataset``, R̂ at θ̂'s fixed weights on 512 training
samples), logs it through the Trainer (``advhooks/ratio``, ``advhooks/regime``, ``advhooks/provisional`` ... in
``trainer.state.log_history`` and every ``report_to`` tracker), and warns, naming each difference, if the two
recipes ever part.

Any ``transformers`` model works the same way; a ViT, for instance (``input_key="pixel_values"``):

    model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=4, num_labels=10))
    AdversarialTrainer(model=model, args=args, train_dataset=train, eval_dataset=test, attack=PGD(8 / 255),
                       input_key="pixel_values", callbacks=[PhaseMonitorCallback("vit-clean.safetensors",
                                                                                 eps=8 / 255)])
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import tempfile

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainingArguments  # transformers (1/3)
from transformers.trainer_utils import SchedulerType
from transformers.training_args import OptimizerNames

from advhooks import PGD, parse_eps
from advhooks.benchmark import CleanBenchmark, Recipe
from advhooks.errors import one_line_errors
from advhooks.integrations.accelerate import finish
from advhooks.integrations.transformers import AdversarialTrainer, CleanBenchmarkCallback, PhaseMonitorCallback
from advhooks.kit.data import load_digits
from advhooks.kit.presets import get_preset
from advhooks.schedules import step_decay

# The Trainer's own recipe (its default optimiser and schedule), used when the --benchmark file does not exist yet.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
TRAINER_RECIPE = Recipe(epochs=20, batch_size=64, lr=1e-2, momentum=0.0, optimizer=str(_DEFAULTS["optim"]),
                        schedule=str(_DEFAULTS["lr_scheduler_type"]))


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


def trainer_name(name: str, names: type) -> str | None:
    """The Trainer's value for an optimiser or schedule name as a recipe records it ("adamw_torch", or
    "OptimizerNames.ADAMW_TORCH" as ``CleanBenchmarkCallback`` writes it); None if the Trainer has no such one."""
    key = name.split(".")[-1]
    return next((m.value for m in names if key in (m.name, m.value)), None)


def run_recipe(args: argparse.Namespace) -> Recipe:
    """The recipe to train with: the benchmark's if its file exists (else the Trainer's own), with the values given."""
    exists = bool(args.benchmark) and os.path.exists(args.benchmark)
    recipe = Recipe.from_record(CleanBenchmark.read(args.benchmark).training) if exists else TRAINER_RECIPE
    recipe = recipe.with_given(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size)
    own = recipe.optimizer == "sgd"  # advhooks' own loop's optimiser (benchmark-clean): made here, not by the Trainer
    if not own and trainer_name(recipe.optimizer, OptimizerNames) is None:
        raise ValueError(f"the benchmark's optimizer {recipe.optimizer!r} is neither 'sgd' nor one of the Trainer's")
    if recipe.schedule == "step_decay" and not own:  # (the step decay is made here, for the SGD made here)
        raise ValueError(f"this example runs the step decay with SGD only, not with {recipe.optimizer!r}")
    if recipe.schedule != "step_decay" and trainer_name(recipe.schedule, SchedulerType) is None:
        raise ValueError(f"the benchmark's schedule {recipe.schedule!r} is neither 'step_decay' nor one of the "
                         "Trainer's")
    return recipe


@one_line_errors  # bad input (an eps of 8 meant as 8/255, a missing file): one line, exit 2
def main(argv: list[str] | None = None) -> list:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eps", default="8/255")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--benchmark", help="clean benchmark: its recipe is the run's (recorded first, with the Trainer's "
                   "own recipe, when the file does not exist)")
    p.add_argument("--epochs", type=int, default=None, help="default: the benchmark's (the Trainer's own recipe: 20)")
    p.add_argument("--lr", type=float, default=None, help="default: the benchmark's (the Trainer's own recipe: 0.01)")
    p.add_argument("--batch-size", type=int, default=None, help="the global batch (default: the benchmark's, the "
                   "Trainer's own recipe: 64); each of N processes takes batch-size / N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report-json", help="write the final report (report.to_dict()) here (JSON, main process)")
    args = p.parse_args(argv)
    eps = parse_eps(args.eps)
    recipe = run_recipe(args)
    # Made here (advhooks' own loop's, as benchmark-clean trains), not by the Trainer from its TrainingArguments:
    own_optimizer, own_schedule = recipe.optimizer == "sgd", recipe.schedule == "step_decay"

    train_set, test_set = load_digits(seed=0)
    train, test = PixelDataset(train_set), PixelDataset(test_set)

    def model():
        torch.manual_seed(args.seed)
        return DigitsClassifier()

    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(
            output_dir=out, num_train_epochs=recipe.epochs, per_device_train_batch_size=recipe.batch_size,
            learning_rate=recipe.lr, weight_decay=recipe.weight_decay,
            max_grad_norm=0.0 if own_optimizer else 1.0,  # advhooks' own loop does not clip; the Trainer does
            **({} if own_optimizer else {"optim": trainer_name(recipe.optimizer, OptimizerNames)}),
            **({} if own_schedule else {"lr_scheduler_type": trainer_name(recipe.schedule, SchedulerType)}),
            report_to=[], use_cpu=True, save_strategy="no", logging_strategy="epoch", disable_tqdm=True, seed=args.seed)
        processes = training_args.world_size
        if recipe.batch_size % processes:
            if training_args.process_index:
                raise SystemExit(2)  # the main process says why
            raise ValueError(f"--batch-size {recipe.batch_size} (the global batch) must be a multiple of the "
                             f"{processes} processes")
        training_args.per_device_train_batch_size = recipe.batch_size // processes  # the global batch: the recipe's
        if args.benchmark and not os.path.exists(args.benchmark):  # the model's own R*(0), same recipe, eps = 0
            recorder = CleanBenchmarkCallback(test, args.benchmark, train_dataset=train)
            clean = Trainer(model=model(), args=training_args, train_dataset=train, callbacks=[recorder])
            clean.train()
            clean.accelerator.wait_for_everyone()  # the main process writes the file the others read next
            if clean.is_world_process_zero():
                print(f"clean benchmark: R*(0) = {recorder.benchmark.clean_test_loss:.4f} "
                      f"(epoch {recorder.benchmark.best_epoch}) -> {args.benchmark}")
        net = model()
        opt = sched = None  # None: the Trainer's own, from training_args
        if own_optimizer:  # the benchmark's SGD with momentum
            opt = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                  weight_decay=recipe.weight_decay)
        if own_schedule:  # the epoch-indexed step decay, stepped per batch (the Trainer's unit)
            steps_per_epoch = math.ceil(len(train) / recipe.batch_size)  # the batches each process takes per epoch
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: step_decay(s // steps_per_epoch, recipe.epochs))
        # What this run trains with, named as the benchmark records it, for the monitor to compare.
        told = {"epochs": recipe.epochs, "batch_size": recipe.batch_size, "lr": recipe.lr,
                "weight_decay": recipe.weight_decay,
                "optimizer": recipe.optimizer if own_optimizer else str(training_args.optim),
                "schedule": recipe.schedule if own_schedule else str(training_args.lr_scheduler_type),
                **({"momentum": recipe.momentum} if own_optimizer else {})}
        callbacks = [PhaseMonitorCallback(args.benchmark, eps=eps, recipe=told)] if args.benchmark else []
        # transformers (3/3): the Trainer with the adversarial mixin, the monitor callback and the evaluation set
        trainer = AdversarialTrainer(model=net, args=training_args, train_dataset=train, eval_dataset=test,
                                     optimizers=(opt, sched), attack=PGD(eps, steps=args.steps),
                                     input_key="pixel_values", callbacks=callbacks)
        seconds = trainer.train().metrics["train_runtime"]
    reports = callbacks[0].reports if callbacks else []
    if reports and trainer.is_world_process_zero():
        share = sum(callbacks[0].monitor.evaluation_seconds.values()) / seconds
        print(f"final: {reports[-1].summary()}; the monitor's evaluation took {100 * share:.1f} % of the training time")
        if args.report_json:  # machine-readable: the final report (benchmarks/every_path.py reads it)
            with open(args.report_json, "w") as fh:
                json.dump(reports[-1].to_dict(), fh, indent=2)
    return reports


if __name__ == "__main__":
    main()
    finish()  # on several processes (accelerate launch): all meet and exit here (see its docs)
