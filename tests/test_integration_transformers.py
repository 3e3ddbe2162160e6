"""The transformers adapter with real tiny models built from configs (no hub downloads)."""

from __future__ import annotations

import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="needs transformers: pip install 'advhooks[hf]'")
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
)

from advhooks import PGD  # noqa: E402
from advhooks.integrations.transformers import AdversarialTrainer, PhaseMonitorCallback  # noqa: E402

EVERY_EPOCH = {"budget": math.inf}  # the monitor evaluates every epoch (these runs are a few batches long)


class DictDataset(torch.utils.data.Dataset):
    def __init__(self, **columns):
        self.columns = columns

    def __len__(self):
        return len(next(iter(self.columns.values())))

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.columns.items()}


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), num_train_epochs=3, per_device_train_batch_size=32,
                learning_rate=5e-3, report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no",
                disable_tqdm=True, seed=0)
    base.update(kw)
    return TrainingArguments(**base)


def _tiny_vit():
    config = ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32, num_labels=10)
    return ViTForImageClassification(config)


def _digits_like(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return DictDataset(pixel_values=torch.rand(n, 1, 8, 8, generator=g), labels=torch.randint(0, 10, (n,), generator=g))


def test_vit_trains_adversarially_and_the_callback_logs(tmp_path):
    torch.manual_seed(0)
    model = _tiny_vit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    callback = PhaseMonitorCallback(0.5, eps=8 / 255)
    trainer = AdversarialTrainer(model=model, args=_args(tmp_path), train_dataset=_digits_like(),
                                 attack=PGD(8 / 255, steps=2), callbacks=[callback])
    trainer.train()
    assert len(callback.reports) == 3 and callback.monitor.epoch == 3
    logged = [h for h in trainer.state.log_history if "advhooks/ratio" in h]
    assert [round(h["advhooks/ratio"], 6) for h in logged] == [round(r.ratio, 6) for r in callback.reports]
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert callback.reports[0].samples == 96


def test_stop_on_flag_stops_the_trainer(tmp_path):
    torch.manual_seed(0)
    callback = PhaseMonitorCallback(1e-3, eps=8 / 255, warmup_epochs=2, patience=1, stop_on_flag=True)
    trainer = AdversarialTrainer(model=_tiny_vit(), args=_args(tmp_path, num_train_epochs=8),
                                 train_dataset=_digits_like(), attack=PGD(8 / 255, steps=1), callbacks=[callback])
    trainer.train()
    assert callback.reports[-1].regime == "eps >> eps*"
    assert callback.monitor.epoch < 8


def test_bert_embedding_space_training_updates_the_embeddings(tmp_path):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=2)
    model = BertForSequenceClassification(config)
    emb_before = model.get_input_embeddings().weight.detach().clone()
    g = torch.Generator().manual_seed(0)
    data = DictDataset(input_ids=torch.randint(0, 40, (64, 8), generator=g),
                       attention_mask=torch.ones(64, 8, dtype=torch.long),
                       labels=torch.randint(0, 2, (64,), generator=g))
    trainer = AdversarialTrainer(model=model, args=_args(tmp_path, num_train_epochs=1), train_dataset=data,
                                 attack=PGD(0.5, norm="l2", bounds=None, steps=2), input_key="inputs_embeds")
    trainer.train()
    assert not torch.equal(emb_before, model.get_input_embeddings().weight.detach())
    with pytest.raises(ValueError, match="bounds=None"):
        AdversarialTrainer(model=model, args=_args(tmp_path), train_dataset=data, attack=PGD(0.5),
                           input_key="inputs_embeds")


def test_callback_state_survives_a_checkpoint_resume(tmp_path):
    torch.manual_seed(0)
    data = _digits_like()
    args = dict(save_strategy="epoch", restore_callback_states_from_checkpoint=True)
    first = AdversarialTrainer(model=_tiny_vit(), args=_args(tmp_path, num_train_epochs=2, **args), train_dataset=data,
                               attack=PGD(8 / 255, steps=1), callbacks=[PhaseMonitorCallback(0.5, eps=8 / 255)])
    first.train()
    checkpoint = sorted((tmp_path / "out").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    second = AdversarialTrainer(model=_tiny_vit(), args=_args(tmp_path, num_train_epochs=3, **args), train_dataset=data,
                                attack=PGD(8 / 255, steps=1), callbacks=[PhaseMonitorCallback(0.5, eps=8 / 255)])
    second.train(resume_from_checkpoint=str(checkpoint))
    (callback,) = [cb for cb in second.callback_handler.callbacks if isinstance(cb, PhaseMonitorCallback)]
    assert callback.monitor.epoch == 3  # two restored epochs plus the resumed one
    assert len(callback.monitor.running_ratios) == 3


def _one_update(tmp_path, batch_size, accumulation):
    torch.manual_seed(0)
    model = _tiny_vit()
    args = _args(tmp_path / f"ga{accumulation}", max_steps=1, per_device_train_batch_size=batch_size,
                 gradient_accumulation_steps=accumulation, optim="sgd", lr_scheduler_type="constant",
                 learning_rate=0.5, logging_strategy="steps", logging_steps=1)
    before = {k: v.clone() for k, v in model.named_parameters()}
    # No random start: both runs attack exactly the same samples the same way.
    trainer = AdversarialTrainer(model=model, args=args, train_dataset=_digits_like(64),
                                 attack=PGD(8 / 255, steps=2, random_start=False))
    trainer.train()
    assert trainer.model_accepts_loss_kwargs  # so the Trainer counted num_items_in_batch: the path under test
    grads = {k: (before[k] - p.detach()) / 0.5 for k, p in model.named_parameters()}  # plain SGD: Δθ = −lr·g
    (loss,) = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return loss, grads


def test_gradient_accumulation_gives_the_full_batch_loss_and_gradients(tmp_path):
    loss_full, grads_full = _one_update(tmp_path, 16, 1)
    loss_acc, grads_acc = _one_update(tmp_path, 8, 2)
    assert loss_acc == pytest.approx(loss_full, rel=1e-5)
    for name, g in grads_full.items():
        torch.testing.assert_close(grads_acc[name], g, rtol=1e-5, atol=1e-6, msg=name)


def test_the_callback_keeps_the_trainers_own_loss_lines(tmp_path):
    def loss_lines(callbacks):
        torch.manual_seed(0)
        trainer = AdversarialTrainer(model=_tiny_vit(), args=_args(tmp_path, logging_strategy="epoch"),
                                     train_dataset=_digits_like(), attack=PGD(8 / 255, steps=1),
                                     callbacks=callbacks)
        trainer.train()
        return [h for h in trainer.state.log_history if "loss" in h]

    assert len(loss_lines([])) == 3
    assert len(loss_lines([PhaseMonitorCallback(0.5, eps=8 / 255)])) == 3


def test_adversarial_evaluation_does_not_advance_the_eps_schedule(tmp_path):
    from advhooks import linear_warmup

    torch.manual_seed(0)
    trainer = AdversarialTrainer(model=_tiny_vit(), args=_args(tmp_path, num_train_epochs=1),
                                 train_dataset=_digits_like(64), eval_dataset=_digits_like(64),
                                 attack=PGD(linear_warmup(8 / 255, 100), steps=1), adversarial_eval=True)
    trainer.train()
    assert trainer.adversarial_step.step == 2  # two training batches of 32
    trainer.evaluate()
    assert trainer.adversarial_step.step == 2


def test_clean_benchmark_from_a_plain_trainer_run_and_no_recipe_warning_after(tmp_path, caplog):
    import logging

    from transformers import Trainer

    from advhooks.benchmark import CleanBenchmark
    from advhooks.integrations.transformers import CleanBenchmarkCallback

    torch.manual_seed(0)
    data, test = _digits_like(96), _digits_like(48)
    recorder = CleanBenchmarkCallback(test, tmp_path / "clean.safetensors", train_dataset=data)
    Trainer(model=_tiny_vit(), args=_args(tmp_path), train_dataset=data, callbacks=[recorder]).train()
    bench = CleanBenchmark.load(tmp_path / "clean.safetensors")
    assert bench.clean_test_loss == pytest.approx(min(recorder.recorder.history), rel=1e-6)
    assert bench.best_epoch == 1 + recorder.recorder.history.index(min(recorder.recorder.history))
    assert bench.training["batch_size"] == 32 and bench.training["epochs"] == 3 and bench.n_train == 96
    with caplog.at_level(logging.WARNING, logger="advhooks.monitor"):
        AdversarialTrainer(model=_tiny_vit(), args=_args(tmp_path), train_dataset=data, attack=PGD(8 / 255, steps=1),
                           callbacks=[PhaseMonitorCallback(str(tmp_path / "clean.safetensors"), eps=8 / 255)]).train()
    assert not [r for r in caplog.records if "recipe" in r.getMessage()]  # same model, batch size, lr: silent
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="advhooks.monitor"):
        AdversarialTrainer(model=_tiny_vit(), args=_args(tmp_path, per_device_train_batch_size=16), train_dataset=data,
                           attack=PGD(8 / 255, steps=1),
                           callbacks=[PhaseMonitorCallback(str(tmp_path / "clean.safetensors"), eps=8 / 255)]).train()
    (warning,) = [r.getMessage() for r in caplog.records if "recipe" in r.getMessage()]
    assert "batch size 16 vs the benchmark's 32" in warning


@pytest.mark.parametrize("eval_strategy", ["no", "epoch"])
def test_the_callback_evaluates_theta_hat_and_rhat_and_logs_the_verdict(tmp_path, eval_strategy):
    from advhooks.monitor import REGIMES

    torch.manual_seed(0)
    callback = PhaseMonitorCallback(0.5, eps=8 / 255, warmup_epochs=2)
    trainer = AdversarialTrainer(model=_tiny_vit(), args=_args(tmp_path, eval_strategy=eval_strategy),
                                 train_dataset=_digits_like(96), eval_dataset=_digits_like(48, seed=1),
                                 attack=PGD(8 / 255, steps=1), callbacks=[callback])
    trainer.train()
    last = callback.reports[-1]
    assert last.adv_test_loss is not None and last.rhat_kind == "fixed weights" and not last.provisional
    assert last.rhat != last.adv_train_loss  # R-hat of fixed weights, not the epoch's running mean
    logged = [h for h in trainer.state.log_history if "advhooks/regime" in h]
    assert len(logged) == 3 and logged[0]["advhooks/provisional"] == 1.0 and logged[-1]["advhooks/provisional"] == 0.0
    assert logged[-1]["advhooks/regime"] == REGIMES.index(last.regime)
    if eval_strategy == "epoch":  # the Trainer's own evaluation still runs beside the callback's
        assert [h for h in trainer.state.log_history if "eval_loss" in h]


def test_without_an_evaluation_set_the_verdict_stays_provisional(tmp_path):
    callback = PhaseMonitorCallback(0.5, eps=8 / 255, warmup_epochs=1)
    AdversarialTrainer(model=_tiny_vit(), args=_args(tmp_path, num_train_epochs=2), train_dataset=_digits_like(),
                       attack=PGD(8 / 255, steps=1), callbacks=[callback]).train()
    assert callback.reports[-1].rhat_kind == "provisional" and callback.reports[-1].provisional


@pytest.mark.parametrize("written_by", ["this version", "0.1.0"])
def test_a_resume_while_rhat_is_pending_evaluates_theta_hats_weights(tmp_path, written_by):
    from transformers import TrainerCallback

    class StopAfterTwoEpochs(TrainerCallback):  # a run cut short right after its epoch-2 checkpoint
        def on_epoch_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.epoch >= 2
            return control

    def trainer(out, *extra):
        torch.manual_seed(0)
        args = _args(tmp_path / out, num_train_epochs=3, save_strategy="epoch",
                     restore_callback_states_from_checkpoint=True)
        # The warm-up lasts the whole run: theta-hat's R-hat is still pending at the epoch-2 checkpoint.
        monitor = PhaseMonitorCallback(0.5, eps=8 / 255, warmup_epochs=3, total_epochs=3, eval_options=EVERY_EPOCH)
        return AdversarialTrainer(model=_tiny_vit(), args=args, train_dataset=_digits_like(96),
                                  eval_dataset=_digits_like(48, seed=1), attack=PGD(8 / 255, steps=1),
                                  callbacks=[monitor, *extra])

    reference = trainer("whole")
    reference.train()
    (whole,) = [cb for cb in reference.callback_handler.callbacks if isinstance(cb, PhaseMonitorCallback)]
    cut = trainer("cut", StopAfterTwoEpochs())
    cut.train()
    checkpoint = tmp_path / "cut" / "out" / "checkpoint-6"
    assert (checkpoint / "advhooks_theta_hat.safetensors").exists()
    if written_by == "0.1.0":  # its checkpoints kept the monitor's state as monitor_state, and no eval_options
        state_file = checkpoint / "trainer_state.json"
        state = json.loads(state_file.read_text())
        saved = state["stateful_callbacks"]["PhaseMonitorCallback"]
        saved["attributes"] = {"monitor_state": saved["attributes"].pop("restored_state")}
        saved["args"].pop("eval_options")
        state_file.write_text(json.dumps(state))
    resumed = trainer("cut")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    (callback,) = [cb for cb in resumed.callback_handler.callbacks if isinstance(cb, PhaseMonitorCallback)]
    ours, theirs = callback.reports[-1], whole.reports[-1]
    assert [r.early_stopped_epoch for r in whole.reports] == [1, 1, 1]  # pending at the checkpoint: from its file
    assert ours.epoch == theirs.epoch == 3 and ours.rhat_kind == theirs.rhat_kind == "fixed weights"
    assert ours.early_stopped_epoch == theirs.early_stopped_epoch
    assert ours.rhat == pytest.approx(theirs.rhat, rel=1e-4)


def test_the_callback_takes_a_recipe_object(tmp_path):
    from advhooks.benchmark import Recipe

    callback = PhaseMonitorCallback(0.5, eps=8 / 255, recipe=Recipe(batch_size=32, epochs=1))
    AdversarialTrainer(model=_tiny_vit(), args=_args(tmp_path, num_train_epochs=1), train_dataset=_digits_like(),
                       attack=PGD(8 / 255, steps=1), callbacks=[callback]).train()
    assert callback.monitor.epoch == 1


def test_a_diverged_run_reads_diverged_on_the_trainer_too(tmp_path):
    from transformers import TrainerCallback

    class PoisonAtEpoch2(TrainerCallback):
        def on_epoch_begin(self, args, state, control, model=None, **kwargs):
            if state.epoch is not None and round(state.epoch) == 1:
                with torch.no_grad():
                    next(model.parameters()).fill_(float("nan"))

    torch.manual_seed(0)
    callback = PhaseMonitorCallback(0.5, eps=8 / 255, warmup_epochs=0, eval_options=EVERY_EPOCH)
    trainer = AdversarialTrainer(model=_tiny_vit(), args=_args(tmp_path), train_dataset=_digits_like(),
                                 eval_dataset=_digits_like(48, seed=1), attack=PGD(8 / 255, steps=2),
                                 callbacks=[PoisonAtEpoch2(), callback])
    trainer.train()
    assert [r.regime for r in callback.reports][1:] == ["diverged", "diverged"]
    assert callback.reports[-1].diverged_epoch == 2 and callback.monitor.rhat["epoch"] == 1


def test_a_mid_epoch_checkpoint_holds_every_process_open_sums(tmp_path):
    import json

    # 96 samples in batches of 32: a checkpoint after step 2 is taken with one batch of the epoch still to come. The
    # Trainer takes the callbacks' state before on_save: the sums are gathered at on_step_end (every process).
    torch.manual_seed(0)
    trainer = AdversarialTrainer(model=_tiny_vit(), args=_args(tmp_path, num_train_epochs=1, save_strategy="steps",
                                                              save_steps=2), train_dataset=_digits_like(),
                                 attack=PGD(8 / 255, steps=1), callbacks=[PhaseMonitorCallback(0.5, eps=8 / 255)])
    trainer.train()
    state = json.loads((tmp_path / "out" / "checkpoint-2" / "trainer_state.json").read_text())
    saved = state["stateful_callbacks"]["PhaseMonitorCallback"]["attributes"]["restored_state"]
    assert saved["open_count"] == 64 and saved["open_by_rank"] == [
        [pytest.approx(saved["open_loss_sum"]), 64.0, 0.0, saved["open_passes"]]]
