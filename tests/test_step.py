"""AdversarialStep: outputs, objectives, model output kinds, dict batches, schedules, errors."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from advhooks import FGM, PGD, AdversarialStep, linear_warmup
from advhooks.losses import mart_loss, trades_loss

from .conftest import SmallCNN


def test_at_step_loss_is_the_adversarial_cross_entropy(cnn, batch):
    x, y = batch
    cnn.train()
    out = AdversarialStep(cnn, PGD(8 / 255, steps=3))(x, y)
    assert out.loss.requires_grad and not out.adv_loss.requires_grad
    assert out.batch_size == 16 and out.eps == pytest.approx(8 / 255)
    assert out.clean_loss is None and out.clean_logits is None
    assert (out.adv_inputs - x).abs().max() <= 8 / 255 + 1e-6
    torch.testing.assert_close(out.adv_loss, out.loss.detach())
    # The gradient the loop gets is that of the training forward on the adversarial inputs.
    out.loss.backward()
    grads = [p.grad.clone() for p in cnn.parameters()]
    reference = SmallCNN()
    reference.load_state_dict(cnn.state_dict())
    nn.functional.cross_entropy(reference.train()(out.adv_inputs), y).backward()
    for g, p in zip(grads, reference.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad)


@pytest.mark.parametrize("objective", ["trades", "mart"])
def test_trades_and_mart_steps_use_their_losses(cnn, batch, objective):
    x, y = batch
    cnn.eval()  # deterministic forwards, so the loss can be recomputed from the outputs
    out = AdversarialStep(cnn, PGD(8 / 255, steps=3), objective=objective, beta=2.0)(x, y)
    clean_logits, adv_logits = cnn(x), cnn(out.adv_inputs)
    fn = trades_loss if objective == "trades" else mart_loss
    torch.testing.assert_close(out.loss, fn(clean_logits, adv_logits, y, beta=2.0))
    torch.testing.assert_close(out.adv_loss, nn.functional.cross_entropy(adv_logits, y))
    torch.testing.assert_close(out.clean_loss, nn.functional.cross_entropy(clean_logits, y))


def test_trades_attack_increases_the_kl_to_the_clean_prediction(cnn, batch):
    x, y = batch
    cnn.eval()
    out = AdversarialStep(cnn, PGD(0.1, steps=5), objective="trades")(x, y)
    with torch.no_grad():
        p = cnn(x).log_softmax(1)
        kl_adv = nn.functional.kl_div(cnn(out.adv_inputs).log_softmax(1), p, log_target=True, reduction="batchmean")
        noise = (x + (torch.rand_like(x) * 0.2 - 0.1)).clamp(0, 1)
        kl_noise = nn.functional.kl_div(cnn(noise).log_softmax(1), p, log_target=True, reduction="batchmean")
    assert kl_adv > 2 * kl_noise


def test_clean_fraction_mixes_clean_and_adversarial_losses(cnn, batch):
    x, y = batch
    cnn.eval()
    out = AdversarialStep(cnn, FGM(8 / 255), clean_fraction=0.25)(x, y)
    expected = 0.75 * out.adv_loss + 0.25 * out.clean_loss
    torch.testing.assert_close(out.loss.detach(), expected)


def test_custom_criterion_module_is_used_per_sample(cnn, batch):
    x, y = batch
    cnn.eval()
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    out = AdversarialStep(cnn, PGD(8 / 255, steps=2), criterion=crit)(x, y)
    torch.testing.assert_close(out.loss.detach(), crit(cnn(out.adv_inputs), y))
    assert crit.reduction == "mean"  # the user's module is not modified


@dataclass
class _Output:
    logits: torch.Tensor


class _Wrapped(nn.Module):
    """Returns its logits the way HF models and multi-head models do."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.net, self.kind = SmallCNN(), kind

    def forward(self, pixel_values=None, extra=None):
        z = self.net(pixel_values)
        if extra is not None:
            z = z + extra
        return {"tuple": (z, z.detach()), "dict": {"logits": z}, "object": _Output(z)}[self.kind]


@pytest.mark.parametrize("kind", ["tuple", "dict", "object"])
def test_model_outputs_and_dict_batches(kind, batch):
    x, y = batch
    model = _Wrapped(kind)
    extra = torch.zeros(16, 10)
    step = AdversarialStep(model, PGD(8 / 255, steps=2), input_key="pixel_values")
    out = step({"pixel_values": x, "labels": y, "extra": extra})
    assert out.logits.shape == (16, 10)
    out.loss.backward()
    assert model.net.fc.weight.grad is not None


def test_embedding_space_training_keeps_the_graph_to_the_embeddings():
    class TextModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(50, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, inputs_embeds=None, attention_mask=None):
            h = inputs_embeds * attention_mask[..., None]
            return {"logits": self.head(h.mean(1))}

    model = TextModel()
    ids = torch.randint(0, 50, (4, 6))
    mask = torch.ones(4, 6)
    embeds = model.embed(ids)
    step = AdversarialStep(model, PGD(0.5, norm="l2", bounds=None, steps=3), input_key="inputs_embeds")
    out = step({"inputs_embeds": embeds, "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 0])})
    out.loss.backward()
    assert model.embed.weight.grad is not None and model.embed.weight.grad.abs().sum() > 0
    assert ((out.adv_inputs - embeds.detach()).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all()


def test_eps_schedule_and_resume(cnn, batch):
    step = AdversarialStep(cnn, PGD(linear_warmup(0.1, warmup_steps=4), steps=2))
    eps = [step(*batch).eps for _ in range(6)]
    assert eps == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1, 0.1])
    resumed = AdversarialStep(cnn, PGD(linear_warmup(0.1, warmup_steps=4), steps=2))
    resumed.load_state_dict({"step": 2})
    assert resumed(*batch).eps == pytest.approx(0.05)
    assert step.state_dict() == {"step": 6}
    with pytest.raises(ValueError, match="step"):
        resumed.load_state_dict({"step": -1})


def test_a_few_epochs_of_adversarial_training_lower_the_adversarial_loss():
    torch.manual_seed(0)
    x = torch.rand(256, 1, 8, 8)
    y = (x[:, 0, :4].mean(dim=(1, 2)) > x[:, 0, 4:].mean(dim=(1, 2))).long()
    model = SmallCNN(num_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    attack = PGD(4 / 255, steps=3)
    step = AdversarialStep(model, attack)
    model.eval()
    start = nn.functional.cross_entropy(model(attack(model, x, y)), y).item()
    model.train()
    for _ in range(15):
        for i in range(0, 256, 64):
            out = step(x[i : i + 64], y[i : i + 64])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    model.eval()
    end = nn.functional.cross_entropy(model(attack(model, x, y)), y).item()
    assert end < 0.7 * start


def test_step_errors(cnn, batch):
    attack = PGD(8 / 255)
    with pytest.raises(TypeError, match="attack must be"):
        AdversarialStep(cnn, lambda m, x, y: x)
    with pytest.raises(TypeError, match="model must be"):
        AdversarialStep(lambda x: x, attack)
    with pytest.raises(ValueError, match="objective must be one of"):
        AdversarialStep(cnn, attack, objective="free")
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        AdversarialStep(cnn, attack, objective="trades", beta=-1)
    with pytest.raises(ValueError, match="beta applies"):
        AdversarialStep(cnn, attack, beta=1.0)
    for bad in (-0.1, 1.0, 2):
        with pytest.raises(ValueError, match=r"clean_fraction must be in \[0, 1\)"):
            AdversarialStep(cnn, attack, clean_fraction=bad)
    with pytest.raises(ValueError, match="clean_fraction applies"):
        AdversarialStep(cnn, attack, objective="trades", clean_fraction=0.5)
    with pytest.raises(ValueError, match="random_start=True"):
        AdversarialStep(cnn, PGD(8 / 255, random_start=False), objective="trades")
    with pytest.raises(ValueError, match="MART defines"):
        AdversarialStep(cnn, attack, objective="mart", criterion=nn.CrossEntropyLoss())
    step = AdversarialStep(cnn, attack)
    with pytest.raises(ValueError, match="input_key"):
        step({"x": batch[0]})
    with pytest.raises(ValueError, match="targets are required"):
        step(batch[0])
    keyed = AdversarialStep(cnn, attack, input_key="pixel_values")
    with pytest.raises(KeyError, match="label_key"):
        keyed({"pixel_values": batch[0]})


def test_grad_align_adds_the_gradient_misalignment(batch):
    torch.manual_seed(0)
    x, y = batch
    model = SmallCNN().eval()
    plain = AdversarialStep(model, FGM(8 / 255, random_start=True))
    aligned = AdversarialStep(model, FGM(8 / 255, random_start=True), grad_align=0.5)
    torch.manual_seed(1)
    base = plain(x, y)
    torch.manual_seed(1)
    out = aligned(x, y)
    torch.testing.assert_close(out.adv_inputs, base.adv_inputs)
    extra = (out.loss - base.loss).item() / 0.5
    assert 0.0 < extra <= 2.0  # 1 − cos lies in [0, 2], and two input gradients are never parallel here
    out.loss.backward()  # double backpropagation reaches the parameters
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="grad_align"):
        AdversarialStep(model, FGM(0.1), grad_align=-1.0)
