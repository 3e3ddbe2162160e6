"""HuggingFace Accelerate glue: adversarial steps and the PhaseMonitor inside an Accelerate loop.

    accelerator = Accelerator()
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    adv = AcceleratedAdversarialTraining(accelerator, model, PGD(eps=8/255),
                                         monitor=PhaseMonitor("clean.safetensors", eps=8/255, total_epochs=epochs),
                                         eval_data=(train_set, test_set), stop_on_flag=True)
    for epoch in range(epochs):
        for x, y in loader:
            out = adv(x, y)                      # attack + loss, under the accelerator's autocast
            optimizer.zero_grad()
            accelerator.backward(out.loss)
            optimizer.step()
        report = adv.epoch_end()                 # reduced over processes, logged to the trackers
        if adv.should_stop():                    # every rank stops together when the flag fired
            break

What it does for you: runs the step under ``accelerator.autocast()``; the attack's forwards go to the
module inside DDP, so they never prepare a gradient reduction; the monitor sums through
``accelerator.reduce``; with ``eval_data`` the monitor evaluates the paper's verdict itself (θ̂ by the
adversarial test loss each epoch, R̂ at θ̂'s fixed weights on a fixed training subset), every process
evaluating its share of the same samples; reports go to ``accelerator.log``; with ``stop_on_flag`` the
ε ≫ ε* flag sets the accelerator's trigger so that ``check_trigger`` stops all ranks at once.

Two things about process counts: the benchmark's batch size is the *global* one (per-process batch ×
processes), and an epoch-indexed learning-rate schedule must not go through ``accelerator.prepare``: a
prepared scheduler steps the wrapped one once per process at every ``step()`` (it is meant for per-batch
schedules), so on 2 processes an epoch schedule would run twice as fast.

Checkpoints: ``adv.save_state(dir)`` / ``adv.load_state(dir)`` wrap ``accelerator.save_state`` /
``load_state`` and add one JSON file per process with the step's ε-schedule counter and the monitor
(whose open-epoch sums differ from rank to rank), so a resume mid-epoch on several processes is exact
and nothing of advhooks is unpickled. ``register_for_checkpointing=True`` instead hands both objects to
Accelerate's own ``save_state``, which writes the main process's file only: the monitor's state then gathers
every process's open-epoch sums first (so a mid-epoch resume is exact too), but Accelerate unpickles the
files with the weights-only guard off.

Leaving: end the script with ``finish(accelerator)`` (see its docs: on several processes it exits there).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from advhooks._distributed import BATCHNORM_NOTE, unsynced_batchnorm
from advhooks._files import write_json_atomic
from advhooks.attacks import Attack
from advhooks.monitor import PhaseMonitor, PhaseReport
from advhooks.monitor.phase_monitor import evaluation_options
from advhooks.monitor.record import write_weights
from advhooks.step import AdversarialStep, StepOutput

__all__ = ["AcceleratedAdversarialTraining", "finish", "real_samples", "report_metrics"]

STATE_FILE = "advhooks_state_{rank}.json"
WEIGHTS_FILE = "advhooks_theta_hat.safetensors"


def report_metrics(report: PhaseReport, prefix: str = "advhooks/") -> dict[str, float]:
    """The numeric fields of a report, for experiment trackers (``report.metrics(prefix)``)."""
    return report.metrics(prefix)


def real_samples(accelerator: Any, out: StepOutput) -> StepOutput | None:
    """``out`` restricted to the samples this process really holds, ``None`` when it holds none.

    On several processes a prepared loader whose data set does not fill its last global batch pads it with
    samples from the start of the data set (``even_batches``), so that every process gets a full batch; the real
    ones are the first ``gradient_state.remainder`` in process order (what ``gather_for_metrics`` keeps). Fed
    whole, those repeated samples would enter the monitor's epoch mean twice.

    The last batch is the one fetched at the end of the loader *and* closing its accumulation window
    (``sync_gradients``): the HF ``Trainer`` fetches a whole window ahead, so every micro-batch of the last window
    sees ``end_of_dataloader``, but only the last one syncs (``accelerator.accumulate`` syncs there too).
    """
    state = getattr(accelerator, "gradient_state", None)
    if (state is None or not (state.end_of_dataloader and state.sync_gradients) or state.remainder is None
            or state.remainder <= 0 or accelerator.num_processes == 1 or out.adv_losses is None):
        return out
    n = out.batch_size
    real = min(max(state.remainder - accelerator.process_index * n, 0), n)
    if real == n:
        return out
    if real == 0:
        return None
    kept = out.adv_losses[:real]
    return dataclasses.replace(out, adv_loss=kept.mean(), adv_losses=kept, batch_size=real)


class AcceleratedAdversarialTraining:
    """An :class:`~advhooks.AdversarialStep` (and optional monitor) wired into an ``accelerate.Accelerator``.

    Args:
        accelerator: the user's accelerator.
        model: the prepared model (DDP-wrapped when distributed).
        attack: the attack (PGD/FGM).
        objective, criterion, beta, clean_fraction, input_key, label_key: as in :class:`~advhooks.AdversarialStep`.
        monitor: a :class:`~advhooks.monitor.PhaseMonitor` to feed (optional).
        eval_data: ``(train_data, test_data)`` datasets without augmentation: the monitor evaluates θ̂ and R̂
            on them itself (``monitor.evaluate_with(model, train_data, test_data, device=accelerator.device)``,
            its default subsets and attack). Leave it out when you called ``evaluate_with`` yourself or pass
            ``adv_test_loss`` to :meth:`epoch_end`.
        eval_options: keyword options of ``evaluate_with`` for ``eval_data`` (``budget``, ``test_subset`` ...).
        stop_on_flag: set the accelerator's trigger when the ε ≫ ε* flag fires (opt-in).
        log_prefix: prefix of the tracker metric names.
        register_for_checkpointing: also register the step and the monitor with Accelerate's own
            ``save_state`` (see the module docs); default off: use :meth:`save_state`.
    """

    def __init__(self, accelerator: Any, model: torch.nn.Module, attack: Attack, *, objective: str = "at",
                 criterion: Any = None, beta: float | None = None, clean_fraction: float = 0.0,
                 input_key: str | None = None, label_key: str = "labels", monitor: PhaseMonitor | None = None,
                 eval_data: tuple[Any, Any] | None = None, stop_on_flag: bool = False, log_prefix: str = "advhooks/",
                 register_for_checkpointing: bool = False, eval_options: Mapping[str, Any] | None = None) -> None:
        if not hasattr(accelerator, "autocast") or not hasattr(accelerator, "reduce"):
            raise TypeError(f"accelerator must be an accelerate.Accelerator, got {type(accelerator).__name__}")
        if (stop_on_flag or eval_data is not None) and monitor is None:
            raise ValueError(f"{'stop_on_flag' if stop_on_flag else 'eval_data'} needs a monitor")
        if eval_data is not None and (not isinstance(eval_data, (tuple, list)) or len(eval_data) != 2):
            raise TypeError("eval_data must be (train_data, test_data)")
        self.accelerator = accelerator
        self.step = AdversarialStep(model, attack, objective=objective, criterion=criterion, beta=beta,
                                    clean_fraction=clean_fraction, input_key=input_key, label_key=label_key)
        self.monitor = monitor
        self.stop_on_flag = stop_on_flag
        self.log_prefix = log_prefix
        if monitor is not None:
            # (to the accelerator's device: NCCL takes no CPU tensor, and the monitor's sums may be plain floats)
            monitor.reducer = lambda t: accelerator.reduce(t.to(accelerator.device), reduction="sum")
            if accelerator.num_processes > 1 and unsynced_batchnorm(model) and accelerator.is_main_process:
                monitor.logger.warning(BATCHNORM_NOTE.format(
                    n=accelerator.num_processes, how="model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) "
                                                    "before accelerator.prepare"))
        if eval_data is not None:
            options = {"device": accelerator.device, **evaluation_options(eval_options)}
            monitor.evaluate_with(model, *eval_data, **options)
        if register_for_checkpointing:
            accelerator.register_for_checkpointing(self.step, *([_SharedState(monitor)] if monitor is not None else []))

    def __call__(self, inputs: torch.Tensor | Mapping[str, Any], targets: torch.Tensor | None = None) -> StepOutput:
        """Attack the batch and return the step output (feeds the monitor)."""
        with self.accelerator.autocast():
            out = self.step(inputs, targets)
        counted = real_samples(self.accelerator, out) if self.monitor is not None else None
        if counted is not None:  # (a padded last batch: the repeated samples are left out of the epoch mean)
            self.monitor.update(counted)
        return out

    def epoch_end(self, adv_test_loss: float | None = None) -> PhaseReport | None:
        """Close the monitor's epoch (on every process): reduce, evaluate, log to the trackers, set the stop
        trigger if asked. ``adv_test_loss``: as in :meth:`PhaseMonitor.epoch_end`."""
        if self.monitor is None:
            return None
        report = self.monitor.epoch_end(adv_test_loss)
        self.accelerator.log(report_metrics(report, self.log_prefix), step=report.epoch)
        if self.stop_on_flag and report.should_stop:
            self.accelerator.set_trigger()
        return report

    def state_dict(self) -> dict[str, Any]:
        """The step's ε-schedule counter and this process's monitor state (plain values, and θ̂'s weights while
        its R̂ is pending: :meth:`save_state` writes those as safetensors)."""
        return {"step": self.step.state_dict(), "monitor": None if self.monitor is None else self.monitor.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.step.load_state_dict(state["step"])
        if self.monitor is not None:
            if state.get("monitor") is None:
                raise ValueError("the saved state has no monitor, but this adapter has one")
            self.monitor.load_state_dict(state["monitor"])

    def save_state(self, output_dir: str | os.PathLike, **kwargs: Any) -> Path:
        """``accelerator.save_state(output_dir)`` plus this process's advhooks state as JSON (call on every rank);
        θ̂'s weights, while its R̂ is pending, as safetensors beside it."""
        location = Path(self.accelerator.save_state(str(output_dir), **kwargs) or output_dir)
        location.mkdir(parents=True, exist_ok=True)  # the main process may not have made it yet
        rank = self.accelerator.process_index
        state = self.state_dict()
        weights = state["monitor"].pop("theta_hat_weights", None) if state["monitor"] is not None else None
        if self.accelerator.is_main_process:  # θ̂'s weights are the same on every rank: one file
            if weights is not None:
                write_weights(location / WEIGHTS_FILE, weights)
            else:  # (a folder saved into before must not hand back weights that are no longer pending)
                (location / WEIGHTS_FILE).unlink(missing_ok=True)
        write_json_atomic(location / STATE_FILE.format(rank=rank), state)
        return location

    def load_state(self, input_dir: str | os.PathLike, **kwargs: Any) -> None:
        """``accelerator.load_state(input_dir)`` plus this process's advhooks state (call on every rank)."""
        self.accelerator.load_state(str(input_dir), **kwargs)
        path = Path(input_dir) / STATE_FILE.format(rank=self.accelerator.process_index)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: was {input_dir} saved with adv.save_state, by as many "
                                    f"processes ({self.accelerator.num_processes})?")
        state = json.loads(path.read_text())
        weights = Path(input_dir) / WEIGHTS_FILE
        if state.get("monitor") is not None and weights.exists():
            state["monitor"]["theta_hat_weights"] = load_file(str(weights))
        self.load_state_dict(state)

    def should_stop(self) -> bool:
        """True on every rank once any rank set the trigger (the accelerator's ``check_trigger``)."""
        return bool(self.accelerator.check_trigger())


class _SharedState:
    """The monitor as Accelerate's ``save_state`` sees it: its state taken on every process with every process's
    open-epoch sums gathered in (Accelerate writes the main process's file alone)."""

    def __init__(self, monitor: PhaseMonitor) -> None:
        self.monitor = monitor

    def state_dict(self) -> dict[str, Any]:
        self.monitor.share_open_sums()
        return self.monitor.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.monitor.load_state_dict(state)


def finish(accelerator: Any = None, *, barrier: bool = True) -> None:
    """End a distributed run: every rank meets, flushes stdout/stderr and exits with status 0 right here.

    Why: with torch 2.14 and gloo on the CPU, processes aborted at interpreter exit after all their work
    ("terminate called without an active exception"): about one run in five after
    ``accelerator.end_training()``, still now and then without it, with or without
    ``destroy_process_group``. A launcher then reports a finished run as failed. So this skips Python's
    teardown (and gloo's with it) through ``os._exit(0)``.

    Call it last, after the results are written and closed: on several processes it does not return, so
    nothing after it runs (no ``finally`` blocks, ``atexit`` handlers or tracker shutdown), and only
    ``sys.stdout`` and ``sys.stderr`` are flushed. On a single process it returns (the wait is a no-op), so
    ``finish(accelerator); return 0`` ends a one-process run normally.

    Args:
        accelerator: an ``accelerate.Accelerator``: it exits when the run has several processes. ``None``:
            plain ``torch.distributed``: it exits whenever a process group is initialised (even of one
            process, whose use can trigger the same abort), and returns otherwise.
        barrier: wait for the other ranks first (``accelerator.wait_for_everyone()`` or
            ``dist.barrier()``); pass ``False`` where a peer may be gone, or the barrier would hang.
    """
    if accelerator is not None:
        if barrier:
            accelerator.wait_for_everyone()
        distributed = accelerator.num_processes > 1
    else:
        distributed = dist.is_available() and dist.is_initialized()
        if distributed and barrier:
            dist.barrier()
    if not distributed:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
