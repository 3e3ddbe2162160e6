"""HuggingFace ``transformers`` glue: an adversarial ``Trainer`` and a PhaseMonitor ``TrainerCallback``.

    from advhooks import PGD
    from advhooks.integrations.transformers import AdversarialTrainer, PhaseMonitorCallback

    trainer = AdversarialTrainer(
        model=vit, args=TrainingArguments(..., restore_callback_states_from_checkpoint=True),
        train_dataset=ds, attack=PGD(eps=8/255), input_key="pixel_values",
        callbacks=[PhaseMonitorCallback("clean.safetensors", eps=8/255, stop_on_flag=True)],
    )
    trainer.train()

Images: the attack perturbs ``pixel_values`` (give the attack ``normalization=(mean, std)`` when the
image processor normalises, so ε stays in pixel units). Text: ``input_key="inputs_embeds"`` turns
``input_ids`` into embeddings with the model's own embedding layer and perturbs those (embedding-space
adversarial training; the attack needs ``bounds=None``); gradients still reach the embedding matrix.
Evaluation uses the standard loss unless ``adversarial_eval=True``.

The callback logs through the Trainer's logging (so to its ``report_to`` trackers), can stop training
when ε ≫ ε* is flagged, and saves its state with the Trainer's stateful-callback mechanism (enable
``restore_callback_states_from_checkpoint`` to restore it on resume).
"""

from __future__ import annotations

import logging
import os
from typing import Any

try:
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_callback import ExportableState
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("advhooks.integrations.transformers needs transformers: pip install 'advhooks[hf]'") from err

from advhooks.attacks import Attack, unwrap_parallel
from advhooks.monitor import PhaseMonitor
from advhooks.step import AdversarialStep, StepOutput

__all__ = ["AdversarialTrainer", "AdversarialTrainerMixin", "PhaseMonitorCallback"]

log = logging.getLogger(__name__)


class PhaseMonitorCallback(TrainerCallback, ExportableState):
    """Run a :class:`~advhooks.monitor.PhaseMonitor` inside a ``Trainer`` (fed by :class:`AdversarialTrainer`).

    Args:
        benchmark: path of the clean benchmark file, or R*(0) as a number (plain values, so the Trainer
            can rebuild the callback from its checkpoint).
        eps, threshold, patience, warmup_epochs, total_epochs, min_delta: as in ``PhaseMonitor``.
        stop_on_flag: set ``control.should_training_stop`` when ε ≫ ε* is flagged.
        monitor_state: a monitor ``state_dict()`` to start from (used when resuming).
    """

    def __init__(self, benchmark: str | os.PathLike | float, eps: float | None = None, threshold: float = 1.5,
                 patience: int = 5, warmup_epochs: int | None = None, total_epochs: int | None = None,
                 min_delta: float = 0.01, stop_on_flag: bool = False, monitor_state: dict | None = None) -> None:
        benchmark = str(benchmark) if isinstance(benchmark, os.PathLike) else benchmark
        self._args = dict(benchmark=benchmark, eps=eps, threshold=threshold, patience=patience,
                          warmup_epochs=warmup_epochs, total_epochs=total_epochs, min_delta=min_delta,
                          stop_on_flag=stop_on_flag)
        self.monitor = PhaseMonitor(benchmark, eps=eps, threshold=threshold, patience=patience,
                                    warmup_epochs=warmup_epochs, total_epochs=total_epochs, min_delta=min_delta)
        self.stop_on_flag = stop_on_flag
        self.trainer: Trainer | None = None
        self.reports: list = []
        if monitor_state is not None:
            self.monitor_state = monitor_state

    @property
    def monitor_state(self) -> dict:
        """The monitor's plain-value state (set it to restore)."""
        return self.monitor.state_dict()

    @monitor_state.setter
    def monitor_state(self, value: dict) -> None:
        self.monitor.load_state_dict(value)

    def state(self) -> dict:
        """The Trainer's stateful-callback hook: constructor args and the monitor's state."""
        return {"args": dict(self._args), "attributes": {"monitor_state": self.monitor.state_dict()}}

    def update(self, output: StepOutput) -> None:
        """Add one batch (called by :class:`AdversarialTrainerMixin`)."""
        self.monitor.update(output)

    def on_epoch_end(self, args, state, control, **kwargs):
        if not self.monitor.has_updates:
            log.warning("PhaseMonitorCallback saw no adversarial batches this epoch: use AdversarialTrainer")
            return control
        report = self.monitor.epoch_end()
        self.reports.append(report)
        metrics = report.metrics("advhooks/")
        if self.trainer is not None:
            # Trainer.log() clears control.should_log; keep it, or the Trainer drops its own loss line
            # for the epoch's last step (logging_strategy="epoch" logs right after this event).
            should_log = control.should_log
            self.trainer.log(metrics)
            control.should_log = should_log
        if self.stop_on_flag and report.should_stop:
            control.should_training_stop = True
        return control


class AdversarialTrainerMixin:
    """Mix into a ``Trainer`` subclass to train adversarially; see the module docs.

    Keyword args (besides the Trainer's):
        attack: the attack (PGD/FGM).
        objective, criterion, beta, clean_fraction: as in :class:`~advhooks.AdversarialStep`.
        input_key: ``"pixel_values"`` (default) or ``"inputs_embeds"`` (from ``input_ids``).
        label_key: the batch key of the labels.
        adversarial_eval: also attack during evaluation (default: standard loss).
    """

    def __init__(self, *args: Any, attack: Attack, objective: str = "at", criterion: Any = None,
                 beta: float | None = None, clean_fraction: float = 0.0, input_key: str = "pixel_values",
                 label_key: str = "labels", adversarial_eval: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if input_key == "inputs_embeds" and attack.domain.is_bounded:
            raise ValueError("embedding-space attacks (input_key='inputs_embeds') need an attack with bounds=None")
        self.adversarial_step = AdversarialStep(self.model, attack, objective=objective, criterion=criterion,
                                                beta=beta, clean_fraction=clean_fraction, input_key=input_key,
                                                label_key=label_key)
        self.adversarial_eval = adversarial_eval

    def _phase_callbacks(self) -> list[PhaseMonitorCallback]:
        found = [cb for cb in self.callback_handler.callbacks if isinstance(cb, PhaseMonitorCallback)]
        for cb in found:  # the Trainer may have rebuilt it from a checkpoint
            cb.trainer = self
        return found

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training and not self.adversarial_eval:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        batch = dict(inputs)
        step = self.adversarial_step
        if step.input_key == "inputs_embeds" and "inputs_embeds" not in batch:
            ids = batch.pop("input_ids")
            batch["inputs_embeds"] = unwrap_parallel(model).get_input_embeddings()(ids)
        step.model = model
        out = step(batch, advance=model.training)  # evaluation must not move the training's ε schedule
        if model.training:
            for cb in self._phase_callbacks():
                cb.update(out)
        loss = self._scale_for_accumulation(out.loss, out.batch_size, num_items_in_batch)
        return (loss, {"logits": out.logits}) if return_outputs else loss

    def _scale_for_accumulation(self, loss, batch_size, num_items_in_batch):
        """The batch-mean loss in the units the Trainer expects, so accumulation gives the full batch's mean.

        When the Trainer counts ``num_items_in_batch`` (the samples of all accumulated micro-batches), it
        takes the loss as already divided by that count and does not divide by the accumulation steps
        itself: return ``sum / num_items_in_batch`` then (and, as its own ``compute_loss`` does, undo the
        division by the number of processes that DDP's gradient averaging brings when the count is
        gathered across devices). Without a count the Trainer divides the mean by the steps itself.
        """
        if num_items_in_batch is None:
            return loss
        loss = loss * (batch_size / num_items_in_batch)
        if getattr(self.args, "average_tokens_across_devices", False) and self.args.world_size > 1:
            loss = loss * self.accelerator.num_processes
        return loss


class AdversarialTrainer(AdversarialTrainerMixin, Trainer):
    """``transformers.Trainer`` that trains adversarially (see :class:`AdversarialTrainerMixin`)."""


