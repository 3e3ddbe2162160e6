"""HuggingFace ``transformers`` glue: an adversarial ``Trainer`` and a PhaseMonitor ``TrainerCallback``.

    from advhooks import PGD
    from advhooks.integrations.transformers import AdversarialTrainer, PhaseMonitorCallback

    trainer = AdversarialTrainer(
        model=vit, args=TrainingArguments(..., restore_callback_states_from_checkpoint=True),
        train_dataset=ds, eval_dataset=test_ds, attack=PGD(eps=8/255), input_key="pixel_values",
        callbacks=[PhaseMonitorCallback("clean.safetensors", eps=8/255, stop_on_flag=True)],
    )
    trainer.train()

Images: the attack perturbs ``pixel_values`` (give the attack ``normalization=(mean, std)`` when the
image processor normalises, so ε stays in pixel units). Text: ``input_key="inputs_embeds"`` turns
``input_ids`` into embeddings with the model's own embedding layer and perturbs those (embedding-space
adversarial training; the attack needs ``bounds=None``); gradients still reach the embedding matrix.
Evaluation uses the standard loss unless ``adversarial_eval=True``.

The callback evaluates the paper's verdict at every epoch's end (θ̂ by the adversarial loss on the
``eval_dataset``, R̂ at θ̂'s fixed weights on a fixed training subset), logs through the Trainer's logging
(so to its ``report_to`` trackers; ``advhooks/regime`` is the regime's index, ``advhooks/provisional`` 1 or
0), can stop training when ε ≫ ε* is flagged, and saves its state with the Trainer's stateful-callback
mechanism (enable ``restore_callback_states_from_checkpoint`` to restore it on resume; while θ̂'s R̂ is pending,
θ̂'s weights go into the checkpoint as ``advhooks_theta_hat.safetensors``, so a resume evaluates them).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from safetensors.torch import load_file

try:
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_callback import ExportableState
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("advhooks.integrations.transformers needs transformers: pip install 'advhooks[hf]'") from err

from advhooks._distributed import BATCHNORM_NOTE, unsynced_batchnorm
from advhooks.attacks import Attack, unwrap_parallel
from advhooks.benchmark import RunSetup, given_recipe
from advhooks.monitor import PhaseMonitor
from advhooks.monitor.phase_monitor import evaluation_options
from advhooks.monitor.record import write_weights
from advhooks.recorder import CleanBenchmarkRecorder
from advhooks.step import AdversarialStep, StepOutput

from .accelerate import real_samples

THETA_HAT_FILE = "advhooks_theta_hat.safetensors"

__all__ = ["AdversarialTrainer", "AdversarialTrainerMixin", "CleanBenchmarkCallback", "PhaseMonitorCallback"]

log = logging.getLogger(__name__)


class PhaseMonitorCallback(TrainerCallback, ExportableState):
    """Run a :class:`~advhooks.monitor.PhaseMonitor` inside a ``Trainer`` (fed by :class:`AdversarialTrainer`).

    At each epoch's end the monitor evaluates the paper's verdict itself (unless ``evaluate=False``): the
    adversarial test loss on the evaluation set picks θ̂, and R̂ is evaluated at θ̂'s fixed weights on a fixed
    subset of the training set (``PhaseMonitor.evaluate_with``), whether or not the Trainer evaluates, every
    process taking its share.

    Args:
        benchmark: path of the clean benchmark file, or R*(0) as a number.
        stop_on_flag: set ``control.should_training_stop`` when ε ≫ ε* is flagged.
        eval_data: ``(train_dataset, eval_dataset)`` of dict samples without augmentation; default: the
            Trainer's ``train_dataset`` and ``eval_dataset`` (without an evaluation set the verdict stays
            provisional). Read with the trainer's ``input_key`` and ``label_key``.
        evaluate: ``False``: no evaluation of the callback's own (the verdict is provisional).
        eval_options: keyword options of ``PhaseMonitor.evaluate_with`` (``budget``, ``test_subset`` ...; plain values
            are kept in the Trainer's checkpoint).
        monitor_state: a monitor ``state_dict()`` to start from (used when resuming).
        **settings: the monitor's settings (``eps``, ``threshold``, ``warmup_epochs``, ``total_epochs``,
            ``strict``, ``attack`` ...), passed to :class:`~advhooks.monitor.PhaseMonitor` as they are, with
            its defaults; ``total_epochs`` defaults to the Trainer's ``num_train_epochs``. The Trainer rebuilds
            a callback from its checkpoint with the settings that are plain values (not ``attack``).
    """

    def __init__(self, benchmark: str | os.PathLike | float, *, stop_on_flag: bool = False,
                 eval_data: tuple[Any, Any] | None = None, evaluate: bool = True, monitor_state: dict | None = None,
                 eval_options: Mapping[str, Any] | None = None, **settings: Any) -> None:
        self.benchmark = str(benchmark) if isinstance(benchmark, os.PathLike) else benchmark
        self.settings, self.stop_on_flag, self.evaluate = settings, stop_on_flag, evaluate
        self.eval_options = evaluation_options(eval_options)
        self.eval_data = eval_data
        self.monitor = PhaseMonitor(self.benchmark, **settings)
        self.trainer: Trainer | None = None
        self.reports: list = []
        self.restored_state: dict | None = None  # what the Trainer sets from a checkpoint, loaded by the trainer
        if monitor_state is not None:
            self.load_state_dict(monitor_state)

    def state_dict(self) -> dict:
        """The monitor's state as JSON values (what the Trainer stores): θ̂'s pending weights are named by the file
        :meth:`on_save` writes into the checkpoint beside it (``theta_hat_file``), not held."""
        state = self.monitor.state_dict()
        if state.pop("theta_hat_weights", None) is not None and self.trainer is not None:
            state["theta_hat_file"] = self._theta_hat_file(self.trainer.args, self.trainer.state)
        return state

    def load_state_dict(self, value: dict) -> None:
        """Restore :meth:`state_dict`, reading θ̂'s pending weights from the file it names (a checkpoint rotated away:
        θ̂'s R̂ waits for the next θ̂)."""
        value = dict(value)
        path = value.pop("theta_hat_file", None)
        if path is not None and os.path.exists(path):
            value["theta_hat_weights"] = load_file(path)
        self.monitor.load_state_dict(value)

    @staticmethod
    def _theta_hat_file(args: Any, state: Any) -> str:
        """Where :meth:`on_save` writes θ̂'s pending weights: in the checkpoint the Trainer is saving."""
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        return os.path.abspath(os.path.join(folder, THETA_HAT_FILE))

    def on_step_end(self, args, state, control, **kwargs):
        # A checkpoint is due this step: the Trainer takes state() on the main process alone, and before on_save, so
        # every process's open-epoch sums are gathered here, on every process (the flag is the same on all).
        if control.should_save:
            self.monitor.share_open_sums()
        return control

    def on_save(self, args, state, control, **kwargs):
        weights = self.monitor.state_dict().get("theta_hat_weights")
        if weights is not None and state.is_world_process_zero:
            write_weights(self._theta_hat_file(args, state), weights)
        return control

    def keep_settings_of(self, given: PhaseMonitorCallback) -> None:
        """Take the settings of the callback the user gave (the Trainer rebuilt this one from a checkpoint with
        only the plain values: the evaluation data, an ``attack=`` or an ``on_flag=`` would be lost)."""
        self.settings, self.eval_data = dict(given.settings), given.eval_data
        self.evaluate, self.stop_on_flag, self.eval_options = given.evaluate, given.stop_on_flag, given.eval_options

    def state(self) -> dict:
        """The Trainer's stateful-callback hook: the plain-valued arguments and the monitor's state."""
        plain = {k: v for k, v in self.settings.items() if isinstance(v, (int, float, str, bool, type(None)))}
        options = {k: v for k, v in self.eval_options.items() if isinstance(v, (int, float, str, bool, type(None)))}
        return {"args": {"benchmark": self.benchmark, "stop_on_flag": self.stop_on_flag, "evaluate": self.evaluate,
                         "eval_options": options, **plain},
                "attributes": {"restored_state": self.state_dict()}}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # The Trainer knows the run's recipe (the global batch counts the processes and the accumulation) and
        # its length: the monitor compares them with the benchmark's, keeping any state restored from a checkpoint.
        settings = dict(self.settings)
        user = settings.pop("recipe", None)
        given, carried = given_recipe(user)  # the user's word wins over the Trainer's, a "model": None included
        recipe = {"batch_size": args.per_device_train_batch_size * max(args.world_size, 1)
                  * args.gradient_accumulation_steps, "lr": args.learning_rate, "weight_decay": args.weight_decay,
                  **given}
        trainers = RunSetup() if isinstance(user, Mapping) and "model" in user else RunSetup(model=model)
        settings["setup"] = trainers.joined(carried).joined(settings.get("setup"))
        if settings.get("total_epochs") is None and args.num_train_epochs and args.max_steps <= 0:
            settings["total_epochs"] = int(args.num_train_epochs)
        kept = self.monitor.state_dict()
        self.monitor = PhaseMonitor(self.benchmark, **settings, recipe=recipe)
        if args.world_size > 1 and model is not None and unsynced_batchnorm(model) and state.is_world_process_zero:
            self.monitor.logger.warning(BATCHNORM_NOTE.format(
                n=args.world_size,
                how="model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) before building the Trainer"))
        self._evaluate_with(model)
        self.monitor.load_state_dict(kept)
        return control

    def _evaluate_with(self, model: Any) -> None:
        """Hand the monitor the model and the data of its own evaluation, when there is some."""
        trainer = self.trainer
        if not self.evaluate or model is None or trainer is None:
            return
        train, test = self.eval_data or (trainer.train_dataset, trainer.eval_dataset)
        step = trainer.adversarial_step
        if train is None or step.input_key == "inputs_embeds":  # (token ids are not what the attack perturbs)
            return
        keys = (step.input_key or "pixel_values", step.label_key)
        pairs = [None if d is None else _PairsOfDicts(d, *keys) for d in (train, test)]
        self.monitor.evaluate_with(model, pairs[0], pairs[1],
                                   **{"device": next(model.parameters()).device, **self.eval_options})

    def update(self, output: StepOutput) -> None:
        """Add one batch (called by :class:`AdversarialTrainerMixin`)."""
        self.monitor.update(output)

    def on_epoch_end(self, args, state, control, **kwargs):
        if not self.monitor.any_process_has_updates():
            log.warning("PhaseMonitorCallback saw no adversarial batches this epoch: use AdversarialTrainer")
            return control
        report = self.monitor.epoch_end()
        self.reports.append(report)
        if self.trainer is not None:
            # Trainer.log() clears control.should_log; keep it, or the Trainer drops its own loss line
            # for the epoch's last step (logging_strategy="epoch" logs right after this event).
            should_log = control.should_log
            self.trainer.log(report.metrics("advhooks/"))
            control.should_log = should_log
        if self.stop_on_flag and report.should_stop:
            control.should_training_stop = True
        return control


class _PairsOfDicts(torch.utils.data.Dataset):
    """A data set of dict samples seen as ``(inputs, label)`` pairs, for the monitor's evaluation."""

    def __init__(self, dataset: Any, input_key: str, label_key: str) -> None:
        self.dataset, self.input_key, self.label_key = dataset, input_key, label_key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        sample = self.dataset[index]
        return sample[self.input_key], sample[self.label_key]


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
        self._phase_callbacks()  # they read the data sets and the keys from this trainer

    def _load_callback_state(self) -> None:
        # The Trainer rebuilds stateful callbacks from a checkpoint (the monitor's state, the plain settings): the
        # new ones keep the settings the user gave this run and must know this trainer too.
        given = [cb for cb in self.callback_handler.callbacks if isinstance(cb, PhaseMonitorCallback)]
        super()._load_callback_state()
        for old, new in zip(given, self._phase_callbacks(), strict=False):
            if new is not old:
                new.keep_settings_of(old)
            # The Trainer sets the saved state as an attribute (``monitor_state`` in checkpoints of advhooks 0.1.0).
            saved = new.__dict__.pop("monitor_state", None) or new.restored_state
            if saved is not None:
                new.load_state_dict(saved)
                new.restored_state = None

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
        counted = real_samples(self.accelerator, out) if model.training else None
        if counted is not None:  # (the Trainer's loader is Accelerate's: a padded last batch counts its samples once)
            for cb in self._phase_callbacks():
                cb.update(counted)
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


    def on_train_begin(self, args, state, control, model=None, **kwargs):
        recipe = {"batch_size": args.per_device_train_batch_size * max(args.world_size, 1)
                  * args.gradient_accumulation_steps, "optimizer": str(args.optim), "lr": args.learning_rate,
                  "weight_decay": args.weight_decay, "schedule": str(args.lr_scheduler_type)}
        self.recorder = CleanBenchmarkRecorder(_PairsOfDicts(self.test_dataset, *self.keys), recipe=recipe,
                                               batch_size=self.batch_size, device=next(model.parameters()).device)
        return control

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            self.recorder.epoch_end(model)
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and self.recorder is not None and self.recorder.epoch:
            train = None if self.train_dataset is None else _PairsOfDicts(self.train_dataset, *self.keys)
            self.benchmark = self.recorder.finish(model, train_data=train)
            self.benchmark.save(self.path)
            log.info("clean benchmark R*(0) = %.4f (epoch %s) written to %s", self.benchmark.clean_test_loss,
                        self.benchmark.best_epoch, self.path)
        return control
