"""The Lightning adapter with a real lightning.Trainer on the CPU."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning", reason="needs lightning: pip install 'advhooks[lightning]'")

from advhooks import PGD  # noqa: E402
from advhooks.integrations.lightning import AdversarialTrainingMixin, PhaseMonitorCallback  # noqa: E402

EVERY_EPOCH = {"budget": math.inf}  # the monitor evaluates every epoch (these runs are a few batches long)


class LitNet(AdversarialTrainingMixin, L.LightningModule):
    def __init__(self, eps: float = 8 / 255) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                       torch.nn.Linear(32, 10))
        self.configure_adversarial(PGD(eps, steps=2))

    def forward(self, x):
        return self.net(x)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _loader():
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.rand(96, 1, 8, 8, generator=g), torch.randint(0, 10, (96,), generator=g)),
                      batch_size=32)


def _trainer(tmp_path, epochs, callbacks, **kw):
    return L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, callbacks=callbacks, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path), **kw)


def test_lightning_trains_and_the_callback_reports(tmp_path):
    torch.manual_seed(0)
    callback = PhaseMonitorCallback(0.5, eps=8 / 255)
    model = LitNet()
    trainer = _trainer(tmp_path, 3, [callback], enable_checkpointing=False)
    trainer.fit(model, _loader())
    assert len(callback.reports) == 3 and callback.reports[0].samples == 96
    assert trainer.callback_metrics["advhooks/ratio"].item() == pytest.approx(callback.reports[-1].ratio)
    assert "train/adv_loss" in trainer.callback_metrics
    assert callback.monitor.warmup_epochs == 3 // 2 + 5  # total_epochs taken from max_epochs


def test_stop_on_flag_and_checkpoint_resume(tmp_path):
    torch.manual_seed(0)
    stopper = PhaseMonitorCallback(1e-3, eps=8 / 255, warmup_epochs=2, patience=1, stop_on_flag=True)
    trainer = _trainer(tmp_path, 10, [stopper], enable_checkpointing=False)
    trainer.fit(LitNet(), _loader())
    assert stopper.reports[-1].regime == "eps >> eps*" and trainer.current_epoch < 10

    first = PhaseMonitorCallback(0.5, eps=8 / 255)
    trainer = _trainer(tmp_path / "a", 2, [first])
    trainer.fit(LitNet(), _loader())
    ckpt = trainer.checkpoint_callback.best_model_path
    resumed = PhaseMonitorCallback(0.5, eps=8 / 255)
    trainer = _trainer(tmp_path / "b", 3, [resumed])
    trainer.fit(LitNet(), _loader(), ckpt_path=ckpt)
    assert resumed.monitor.epoch == 3 and resumed.monitor.running_ratios[:2] == first.monitor.running_ratios


def test_training_step_needs_configuration():
    class Bare(AdversarialTrainingMixin, L.LightningModule):
        pass

    with pytest.raises(RuntimeError, match="configure_adversarial"):
        Bare().training_step((torch.rand(2, 4), torch.tensor([0, 1])), 0)


def test_clean_benchmark_from_a_clean_fit(tmp_path):
    from advhooks.benchmark import CleanBenchmark
    from advhooks.integrations.lightning import CleanBenchmarkCallback

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(96, 1, 8, 8, generator=g), torch.randint(0, 10, (96,), generator=g)
    train = torch.utils.data.TensorDataset(x, y)
    test_x, test_y = torch.rand(48, 1, 8, 8, generator=g), torch.randint(0, 10, (48,), generator=g)
    test = torch.utils.data.TensorDataset(test_x, test_y)

    class Clean(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    callback = CleanBenchmarkCallback(test, tmp_path / "clean.safetensors", train_data=train,
                                      recipe={"batch_size": 32, "lr": 0.1})
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", devices=1, callbacks=[callback], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Clean(), torch.utils.data.DataLoader(train, batch_size=32))
    bench = CleanBenchmark.load(tmp_path / "clean.safetensors")
    assert bench.clean_test_loss == pytest.approx(min(callback.recorder.history), rel=1e-6)
    assert bench.training["epochs"] == 3 and bench.training["batch_size"] == 32 and bench.n_train == 96


def test_the_callback_evaluates_theta_hat_and_rhat_and_logs_the_verdict(tmp_path):
    from advhooks.monitor import REGIMES

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    test = TensorDataset(torch.rand(48, 1, 8, 8, generator=g), torch.randint(0, 10, (48,), generator=g))
    train_loader = _loader()
    callback = PhaseMonitorCallback(0.5, eps=8 / 255, warmup_epochs=2,
                                    eval_data=(train_loader.dataset, test))
    trainer = _trainer(tmp_path, 3, [callback], enable_checkpointing=False)
    trainer.fit(LitNet(), train_loader)
    last = callback.reports[-1]
    assert last.adv_test_loss is not None and last.rhat_kind == "fixed weights" and not last.provisional
    metrics = trainer.callback_metrics
    assert float(metrics["advhooks/provisional"]) == 0.0
    assert float(metrics["advhooks/regime"]) == REGIMES.index(last.regime)


def test_the_validation_loader_is_the_default_evaluation_set(tmp_path):
    g = torch.Generator().manual_seed(1)
    val = DataLoader(TensorDataset(torch.rand(48, 1, 8, 8, generator=g), torch.randint(0, 10, (48,), generator=g)),
                     batch_size=16)
    callback = PhaseMonitorCallback(0.5, eps=8 / 255, warmup_epochs=1)
    model = LitNet()
    model.validation_step = lambda batch, batch_idx=0: None  # a validation loop that computes nothing
    _trainer(tmp_path, 2, [callback], enable_checkpointing=False).fit(model, _loader(), val)
    assert callback.reports[-1].rhat_kind == "fixed weights"


def test_a_checkpoint_taken_while_rhat_is_pending_carries_theta_hats_weights(tmp_path):
    g = torch.Generator().manual_seed(1)
    test = TensorDataset(torch.rand(48, 1, 8, 8, generator=g), torch.randint(0, 10, (48,), generator=g))
    settings = dict(eps=8 / 255, warmup_epochs=3, total_epochs=3)  # R-hat due only at epoch 3
    torch.manual_seed(0)
    first = PhaseMonitorCallback(0.5, eval_data=(_loader().dataset, test), eval_options=EVERY_EPOCH, **settings)
    trainer = _trainer(tmp_path / "a", 2, [first])
    trainer.fit(LitNet(), _loader())
    saved = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    (state,) = [v for k, v in saved["callbacks"].items() if "PhaseMonitorCallback" in k]
    assert set(state["theta_hat_weights"]) == set(LitNet().state_dict())  # theta-hat's weights, not yet evaluated
    resumed = PhaseMonitorCallback(0.5, eval_data=(_loader().dataset, test), eval_options=EVERY_EPOCH, **settings)
    trainer = _trainer(tmp_path / "b", 3, [resumed])
    trainer.fit(LitNet(), _loader(), ckpt_path=str(next((tmp_path / "a").rglob("*.ckpt"))))
    assert resumed.reports[-1].rhat_kind == "fixed weights" and resumed.monitor.epoch == 3


class _PoisonAt(L.Callback):
    """Turns the module's first weight NaN when ``epoch`` (0-based) starts: a run that diverges."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


def test_a_diverged_run_reads_diverged_and_stops_like_check_finite(tmp_path):
    torch.manual_seed(0)
    data = _loader().dataset
    callback = PhaseMonitorCallback(0.5, eps=8 / 255, warmup_epochs=0, stop_on_flag=True, eval_data=(data, data),
                                    eval_options=EVERY_EPOCH)
    trainer = _trainer(tmp_path, 6, [_PoisonAt(2), callback], enable_checkpointing=False)
    trainer.fit(LitNet(), _loader())
    last = callback.reports[-1]
    assert len(callback.reports) == 3 and last.regime == "diverged" and last.diverged_epoch == 3
    assert callback.monitor.rhat["epoch"] < 3  # θ̂ is never the NaN epoch


def test_a_mid_epoch_checkpoint_holds_every_process_open_sums(tmp_path):
    # Lightning takes the callbacks' states on every process and writes the main one's: the callback gathers the
    # open-epoch sums of every process into it (one process here: a table of one row).
    torch.manual_seed(0)
    callback = PhaseMonitorCallback(0.5, eps=8 / 255)
    every_two = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    trainer = _trainer(tmp_path, 1, [callback, every_two])
    trainer.fit(LitNet(), _loader())
    (mid,) = [p for p in (tmp_path / "ckpt").glob("*.ckpt") if "step=2" in p.name]
    saved = next(v for k, v in torch.load(mid, weights_only=False)["callbacks"].items() if "PhaseMonitorCallback" in k)
    assert saved["open_count"] == 64 and saved["open_by_rank"] == [
        [pytest.approx(saved["open_loss_sum"]), 64.0, 0.0, saved["open_passes"]]]
