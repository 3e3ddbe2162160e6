"""Lightning glue: a PhaseMonitor ``Callback`` and an adversarial ``training_step`` for LightningModules.

    import lightning as L
    from advhooks import PGD
    from advhooks.integrations.lightning import AdversarialTrainingMixin, PhaseMonitorCallback

    class LitClassifier(AdversarialTrainingMixin, L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = ...
            self.configure_adversarial(PGD(eps=8/255), objective="at")

        def forward(self, x):
            return self.net(x)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = L.Trainer(max_epochs=30, callbacks=[PhaseMonitorCallback("clean.safetensors", eps=8/255)])
    trainer.fit(LitClassifier(), train_loader)

The mixin's ``training_step`` attacks the batch on the LightningModule itself (inside Lightning's DDP
wrapper, so no gradient hooks fire during the attack; under Lightning's precision autocast), logs
``train/adv_loss`` and returns ``{"loss": ..., "step_output": ...}``; a hand-written ``training_step``
that returns ``step_output`` the same way works with the callback too. The callback logs through
``pl_module.log``, can stop training when ε ≫ ε* is flagged, and checkpoints its state.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("advhooks.integrations.lightning needs lightning: pip install 'advhooks[lightning]'") from err

from advhooks._distributed import BATCHNORM_NOTE, unsynced_batchnorm
from advhooks.attacks import Attack
from advhooks.benchmark import Recipe
from advhooks.monitor import PhaseMonitor, PhaseReport
from advhooks.monitor.phase_monitor import evaluation_options
from advhooks.recorder import CleanBenchmarkRecorder
from advhooks.step import AdversarialStep, StepOutput

__all__ = ["AdversarialTrainingMixin", "CleanBenchmarkCallback", "PhaseMonitorCallback"]


class PhaseMonitorCallback(pl.Callback):
    """Run a :class:`~advhooks.monitor.PhaseMonitor` in a ``lightning.Trainer``.

    At each training epoch's end the monitor evaluates the paper's verdict itself (unless ``evaluate=False``):
    the adversarial test loss on the evaluation set picks θ̂, and R̂ is evaluated at θ̂'s fixed weights on a
    fixed subset of the training set (``PhaseMonitor.evaluate_with``), every process taking its share.

    Args:
        benchmark: a clean benchmark (object or file path) or R*(0) as a number.
        stop_on_flag: set ``trainer.should_stop`` when ε ≫ ε* is flagged.
        output_key: where ``training_step``'s returned dict holds the :class:`~advhooks.StepOutput`.
        eval_data: ``(train_data, test_data)`` data sets of ``(inputs, label)`` without augmentation; default:
            the data sets of the trainer's training and (first) validation loaders (without a validation
            loader the verdict stays provisional).
        evaluate: ``False``: no evaluation of the callback's own (the verdict is provisional).
        eval_options: keyword options of ``PhaseMonitor.evaluate_with`` (``budget``, ``test_subset``, ``attack`` ...).
        **settings: the monitor's settings (``eps``, ``threshold``, ``warmup_epochs``, ``total_epochs``,
            ``on_flag``, ``strict``, ``attack`` ...), passed to :class:`~advhooks.monitor.PhaseMonitor` as they
            are, with its defaults; ``total_epochs`` defaults to the trainer's ``max_epochs``.
    """

    def __init__(self, benchmark: Any, *, stop_on_flag: bool = False, output_key: str = "step_output",
                 eval_data: tuple[Any, Any] | None = None, evaluate: bool = True,
                 eval_options: Mapping[str, Any] | None = None, **settings: Any) -> None:
        self.benchmark = str(benchmark) if isinstance(benchmark, os.PathLike) else benchmark
        self.settings, self.stop_on_flag, self.output_key = settings, stop_on_flag, output_key
        self.eval_data, self.evaluate, self.eval_options = eval_data, evaluate, evaluation_options(eval_options)
        self.monitor = PhaseMonitor(self.benchmark, **settings)
        self.reports: list[PhaseReport] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(eps=self.settings.get("eps"), threshold=self.settings.get("threshold"))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Without total_epochs, the monitor learns the run's length from the trainer (its own default
        # warm-up and short-run warning then apply).
        settings = dict(self.settings)
        if settings.get("total_epochs") is None and trainer.max_epochs and trainer.max_epochs > 0:
            settings["total_epochs"] = trainer.max_epochs
        kept = self.monitor.state_dict()
        self.monitor = PhaseMonitor(self.benchmark, **settings)
        self.monitor.load_state_dict(kept)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1 and unsynced_batchnorm(pl_module) and trainer.is_global_zero:
            self.monitor.logger.warning(BATCHNORM_NOTE.format(n=trainer.world_size,
                                                              how="Trainer(sync_batchnorm=True)"))
        # The loaders exist from here on; a resumed θ̂'s weights go back to the module's device.
        if not self.evaluate:
            return
        train, test = self.eval_data or (_dataset_of(trainer.train_dataloader), _dataset_of(trainer.val_dataloaders))
        if train is not None:
            kept = self.monitor.state_dict()
            self.monitor.evaluate_with(pl_module, train, test, **{"device": pl_module.device, **self.eval_options})
            self.monitor.load_state_dict(kept)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        out = outputs.get(self.output_key) if isinstance(outputs, dict) else None
        if isinstance(out, StepOutput):
            self.monitor.update(out)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.monitor.any_process_has_updates():
            return
        report = self.monitor.epoch_end()
        self.reports.append(report)
        # The same on every process (the monitor reduced them): sync_dist only keeps Lightning from warning,
        # its mean over processes is the value itself.
        pl_module.log_dict(report.metrics("advhooks/"), on_step=False, on_epoch=True,
                           sync_dist=trainer.world_size > 1)
        if self.stop_on_flag and report.should_stop:
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        # Lightning takes the callbacks' states on every process and writes the main process's: with every
        # process's open-epoch sums gathered into it, a mid-epoch resume restores each process's share.
        self.monitor.share_open_sums()
        return self.monitor.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.monitor.load_state_dict(state_dict)


def _dataset_of(loaders: Any) -> Any:
    """The data set of a loader, or of the first of a list / dict of loaders (``None`` when there is none)."""
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    elif isinstance(loaders, dict):
        loaders = next(iter(loaders.values()), None)
    return getattr(loaders, "dataset", None)


class AdversarialTrainingMixin:
    """A ``training_step`` that trains adversarially; call :meth:`configure_adversarial` in ``__init__``."""

    adversarial_step: AdversarialStep

    def configure_adversarial(self, attack: Attack, objective: str = "at", criterion: Any = None,
                              beta: float | None = None, clean_fraction: float = 0.0, input_key: str | None = None,
                              label_key: str = "labels") -> None:
        """Set the attack and objective (``self`` is the model the attack runs on)."""
        # Kept out of nn.Module's registry: the step holds a reference to this module.
        object.__setattr__(self, "adversarial_step", AdversarialStep(
            self, attack, objective=objective, criterion=criterion, beta=beta, clean_fraction=clean_fraction,
            input_key=input_key, label_key=label_key))

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        if not hasattr(self, "adversarial_step"):
            raise RuntimeError("call self.configure_adversarial(attack) in __init__ before training")
        out = self.adversarial_step(batch) if isinstance(batch, dict) else self.adversarial_step(*batch)
        # (the epoch mean over every process: one reduction per epoch, not per step)
        self.log("train/adv_loss", out.adv_loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=out.batch_size, sync_dist=True)
        return {"loss": out.loss, "step_output": out}


class CleanBenchmarkCallback(pl.Callback):
    """Record the clean benchmark R*(0) from a clean ``Trainer.fit`` of the same LightningModule and recipe.

    After each training epoch it evaluates the clean test loss and keeps the best epoch's weights (the paper's
    early stopping); when fitting ends it loads them into the module and writes the benchmark to ``path``
    (main process). Use the module and the data set-up of your adversarial runs, trained with ε = 0.

    Args:
        test_data: the test set (a ``Dataset`` or a loader of ``(inputs, labels)``).
        path: where to write the benchmark (safetensors).
        train_data: the training set without augmentation, for R̂(θ̂(0), 0) and Δ.
        recipe: how the run trains (a :class:`~advhooks.benchmark.Recipe`, or a mapping of its fields and anything
            else to keep: batch size, lr, schedule, augmentation, ...), stored in the benchmark.
    """

    def __init__(self, test_data: Any, path: str | os.PathLike, *, train_data: Any = None,
                 recipe: Recipe | Mapping[str, Any] | None = None) -> None:
        self.path, self.train_data = str(path), train_data
        self.recorder = CleanBenchmarkRecorder(test_data, recipe=recipe)
        self.benchmark = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The test batches go where the strategy put the module (a GPU), not where the data set holds them.
        self.recorder.device = pl_module.device

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.recorder.epoch_end(pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.recorder.epoch:
            self.benchmark = self.recorder.finish(pl_module, train_data=self.train_data)
            self.benchmark.save(self.path)
