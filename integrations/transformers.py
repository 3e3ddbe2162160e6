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
from advhooks.recorder import CleanBenchmarkRecorder
from advhooks.step import AdversarialStep, StepOutput

__all__ = ["AdversarialTrainer", "AdversarialTrainerMixin", "CleanBenchmarkCallback", "PhaseMonitorCallback"]

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
        self.monitor = PhaseMonitor(benchmark, **self._monitor_kwargs())
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

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # The Trainer knows the run's recipe: compare it with the benchmark's (one warning naming each
        # difference), keeping any state restored from a checkpoint.
        recipe = {"batch_size": args.per_device_train_batch_size * max(args.world_size, 1)
                  * args.gradient_accumulation_steps, "lr": args.learning_rate, "weight_decay": args.weight_decay,
                  "model": model}
        if self._args["total_epochs"] is None and args.num_train_epochs and args.max_steps <= 0:
            recipe["epochs"] = int(args.num_train_epochs)
        kept = self.monitor.state_dict()
        self.monitor = PhaseMonitor(self._args["benchmark"], **self._monitor_kwargs(), recipe=recipe)
        self.monitor.load_state_dict(kept)
        return control

    def _monitor_kwargs(self) -> dict:
        return {k: v for k, v in self._args.items() if k not in ("benchmark", "stop_on_flag")}

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




class _PairsFromDicts:
    """Iterate a dict-batch data set as ``(inputs, labels)`` batches for the clean evaluation."""

    def __init__(self, dataset: Any, input_key: str, label_key: str, batch_size: int, device: Any) -> None:
        import torch.utils.data as tud

        self.loader = tud.DataLoader(dataset, batch_size=batch_size)
        self.input_key, self.label_key, self.device = input_key, label_key, device

    def __iter__(self):
        for batch in self.loader:
            yield batch[self.input_key].to(self.device), batch[self.label_key].to(self.device)


class CleanBenchmarkCallback(TrainerCallback):
    """Record the clean benchmark R*(0) from a plain (clean) ``Trainer`` run: the same recipe as your adversarial one.

    After each epoch it evaluates the clean test loss and keeps the best epoch's weights (the paper's early
    stopping); at the end of training it loads them into the model and writes the benchmark to ``path``, with
    the Trainer's recipe (batch size, epochs, learning rate, weight decay, schedule).

    Args:
        test_dataset: the test set, yielding dict samples.
        path: where to write the benchmark (safetensors).
        train_dataset: the training set without augmentation, for R̂(θ̂(0), 0) and Δ.
        input_key / label_key: the batch keys of the inputs and the labels (the model is called with the inputs
            as its first argument, as ``ViTForImageClassification(pixel_values)`` is).
        batch_size: for the evaluations.
    """

    def __init__(self, test_dataset: Any, path: str | os.PathLike, *, train_dataset: Any = None,
                 input_key: str = "pixel_values", label_key: str = "labels", batch_size: int = 256) -> None:
        self.test_dataset, self.train_dataset, self.path = test_dataset, train_dataset, str(path)
        self.keys, self.batch_size = (input_key, label_key), batch_size
        self.recorder: CleanBenchmarkRecorder | None = None
        self.benchmark = None

    def _pairs(self, dataset: Any, model: Any) -> _PairsFromDicts:
        return _PairsFromDicts(dataset, *self.keys, self.batch_size, next(model.parameters()).device)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        recipe = {"batch_size": args.per_device_train_batch_size * max(args.world_size, 1)
                  * args.gradient_accumulation_steps, "optimizer": str(args.optim), "lr": args.learning_rate,
                  "weight_decay": args.weight_decay, "schedule": str(args.lr_scheduler_type)}
        self.recorder = CleanBenchmarkRecorder(self._pairs(self.test_dataset, model), recipe=recipe)
        return control

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            self.recorder.epoch_end(model)
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and self.recorder is not None and self.recorder.epoch:
            train = None if self.train_dataset is None else self._pairs(self.train_dataset, model)
            self.benchmark = self.recorder.finish(model, train_data=train)
            self.benchmark.save(self.path)
            log.info("clean benchmark R*(0) = %.4f (epoch %s) written to %s", self.benchmark.clean_test_loss,
                        self.benchmark.best_epoch, self.path)
        return control
