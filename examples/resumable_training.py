"""Adversarial training that survives being killed: atomic Accelerate checkpoints and an exact resume.

    python examples/resumable_training.py --out runs/resumable     # trains, checkpointing every 10 steps
    python examples/resumable_training.py --out runs/resumable     # after a crash: resumes where it stopped
    accelerate launch --multi_gpu --num_processes 2 examples/resumable_training.py --out runs/r2

What makes the resume exact (the monitor's reports equal an uninterrupted run's, same seed, CPU):
- ``adv.save_state`` holds what ``accelerator.save_state`` does (the model, the optimizer, every
  process's RNG state) plus, as one JSON file per process, the ε-schedule step and the PhaseMonitor
  (its history and this process's open-epoch sums) and, while θ̂'s R̂ is pending, θ̂'s weights as
  safetensors; the LR schedule's state goes into progress.json;
- the data order is a pure function of (seed, epoch), and the checkpoint records the position in the
  epoch, so the resumed run skips exactly the batches already trained on;
- checkpoints are written into a temporary folder and renamed into place when complete, so a kill
  during a save (even SIGKILL) leaves the previous checkpoint as the newest complete one.

Nothing is unpickled on resume except through ``torch.load(weights_only=True)`` (Accelerate's optimizer
and RNG files); the weights are safetensors and advhooks' state is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from advhooks import PGD
from advhooks.errors import one_line_errors
from advhooks.integrations.accelerate import AcceleratedAdversarialTraining, finish
from advhooks.kit.data import load_digits
from advhooks.kit.presets import get_preset
from advhooks.monitor import PhaseMonitor
from advhooks.schedules import step_decay

CHECKPOINT_PREFIX = "step_"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder: checkpoints/ and final.json go here")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--steps", type=int, default=3, help="PGD steps")
    p.add_argument("--benchmark", type=float, default=0.0855, help="R*(0), or record one with benchmark-clean")
    p.add_argument("--checkpoint-every", type=int, default=10, help="training steps between checkpoints")
    p.add_argument("--keep", type=int, default=2, help="complete checkpoints to keep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-budget", type=float, default=0.05, help="the monitor's evaluation budget, a share of the "
                   "training passes (inf: evaluate every epoch)")
    return p.parse_args(argv)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint (temporary folders of interrupted saves are ignored)."""
    done = sorted(folder.glob(f"{CHECKPOINT_PREFIX}*[0-9]"))
    return done[-1] if done else None


def epoch_batches(n: int, batch_size: int, epoch: int, seed: int, rank: int, world: int) -> list[torch.Tensor]:
    """This process's batches of an epoch: a permutation from (seed, epoch), split across processes."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    global_batch = batch_size * world
    return [order[start + rank * batch_size: start + (rank + 1) * batch_size]
            for start in range(0, n - global_batch + 1, global_batch)]


def save_checkpoint(adv: AcceleratedAdversarialTraining, sched, folder: Path, global_step: int, epoch: int,
                    batch: int, keep: int) -> None:
    """Write into a temporary folder, then rename it into place (atomic on one file system)."""
    accelerator = adv.accelerator
    final = folder / f"{CHECKPOINT_PREFIX}{global_step:08d}"
    tmp = folder / f"{final.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    adv.save_state(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        progress = {"global_step": global_step, "epoch": epoch, "batch": batch, "scheduler": sched.state_dict()}
        (tmp / "progress.json").write_text(json.dumps(progress))
        os.replace(tmp, final)
        for old in sorted(folder.glob(f"{CHECKPOINT_PREFIX}*[0-9]"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


@one_line_errors  # bad input (an eps of 8 meant as 8/255, a missing file): one line, exit 2
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    out = Path(args.out)
    folder = out / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    preset = get_preset("digits-mlp")
    train, test = load_digits(seed=0)
    inputs, labels = train.tensors
    model = preset.model()
    opt = torch.optim.SGD(model.parameters(), lr=preset.recipe.lr, momentum=preset.recipe.momentum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: step_decay(e, args.epochs))
    model, opt = accelerator.prepare(model, opt)
    monitor = PhaseMonitor(args.benchmark, eps=args.eps, total_epochs=args.epochs, verbose=True)
    # The monitor evaluates θ̂ and R̂ itself; until R̂ of θ̂ is evaluated (after the warm-up) θ̂'s weights are part
    # of every checkpoint, so a resume in between evaluates the same weights as an uninterrupted run.
    adv = AcceleratedAdversarialTraining(accelerator, model, PGD(args.eps, steps=args.steps), monitor=monitor,
                                         eval_data=(train, test), eval_options={"budget": args.eval_budget})

    epoch, skip, global_step = 0, 0, 0
    resume = latest_checkpoint(folder)
    if resume is not None:
        adv.load_state(resume)
        progress = json.loads((resume / "progress.json").read_text())
        sched.load_state_dict(progress["scheduler"])
        epoch, skip, global_step = progress["epoch"], progress["batch"], progress["global_step"]
        accelerator.print(f"resumed from {resume.name}: epoch {epoch + 1}, batch {skip}", flush=True)

    reports = []
    while epoch < args.epochs:
        batches = epoch_batches(len(labels), args.batch_size, epoch, args.seed, accelerator.process_index,
                                accelerator.num_processes)
        for index in range(skip, len(batches)):
            idx = batches[index]
            x, y = inputs[idx].to(accelerator.device), labels[idx].to(accelerator.device)
            out_step = adv(x, y)
            opt.zero_grad()
            accelerator.backward(out_step.loss)
            opt.step()
            global_step += 1
            accelerator.print(f"step {global_step}", flush=True)
            if global_step % args.checkpoint_every == 0 and index + 1 < len(batches):  # the epoch's end saves
                save_checkpoint(adv, sched, folder, global_step, epoch, index + 1, args.keep)
        skip = 0
        sched.step()
        reports.append(adv.epoch_end().to_dict())
        epoch += 1
        save_checkpoint(adv, sched, folder, global_step, epoch, 0, args.keep)

    if accelerator.is_main_process:
        final = {"resumed_from": None if resume is None else resume.name, "reports": reports,
                 "monitor": monitor.state_dict()}
        (out / "final.json").write_text(json.dumps(final, indent=2))
    finish(accelerator)  # all processes meet and exit here when there are several (see finish)
    return 0


if __name__ == "__main__":
    sys.exit(main())
