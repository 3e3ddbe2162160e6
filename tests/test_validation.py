"""Bad arguments fail at construction with a message naming the argument and what is accepted."""

from __future__ import annotations

import math

import pytest
import torch

from advhooks import FGM, PGD, linear_warmup, pgd_perturb


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(eps=-0.1), "eps must be a finite number >= 0"),
        (dict(eps=math.nan), "eps must be a finite number >= 0"),
        (dict(eps=math.inf), "eps must be a finite number >= 0"),
        (dict(eps="8/255"), "eps must be a real number"),
        (dict(eps=0.1, step_size=0.0), "step_size must be a finite number > 0"),
        (dict(eps=0.1, step_size=-1.0), "step_size must be a finite number > 0"),
        (dict(eps=0.1, steps=0), "steps must be an integer >= 1"),
        (dict(eps=0.1, steps=2.5), "steps must be an integer >= 1"),
        (dict(eps=0.1, norm="l1"), "norm must be one of 'linf', 'l2'"),
        (dict(eps=0.1, restarts=0), "restarts must be an integer >= 1"),
        (dict(eps=0.1, bounds=(1.0, 0.0)), "bounds must satisfy low < high"),
        (dict(eps=0.1, bounds=(0.5, 0.5)), "bounds must satisfy low < high"),
        (dict(eps=0.1, bounds=((0.0, 0.0), (1.0, -1.0))), "bounds must satisfy low < high"),
        (dict(eps=0.1, bounds=(0.0, 1.0, 2.0)), "bounds must be a pair"),
        (dict(eps=0.1, bounds=(0.0, math.nan)), "bounds high must be finite"),
        (dict(eps=0.1, normalization=((0.5,), (0.0,))), "normalization std must be > 0"),
        (dict(eps=0.1, bn="frozen"), "bn must be one of 'eval', 'train'"),
        (dict(eps=0.1, out_of_bounds="ignore"), "out_of_bounds must be one of 'raise', 'clamp'"),
        (dict(eps=lambda step: -1.0), "eps schedule value at step 0 must be a finite number >= 0"),
    ],
)
def test_pgd_constructor_rejects(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        PGD(**kwargs)


def test_fgm_constructor_rejects():
    with pytest.raises(ValueError, match="eps must be"):
        FGM(-1.0)
    with pytest.raises(ValueError, match="norm must be one of"):
        FGM(0.1, norm="l0")


def test_functional_form_validates_too(cnn, batch):
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        pgd_perturb(cnn, *batch, eps=0.1, steps=0)
    with pytest.raises(TypeError, match="floating-point"):
        pgd_perturb(cnn, torch.zeros(4, 1, 8, 8, dtype=torch.long), batch[1][:4], eps=0.1)


def test_schedule_producing_a_bad_value_later_is_caught(cnn, batch):
    attack = PGD(lambda step: 0.1 if step < 3 else math.nan, steps=1)
    attack(cnn, *batch, step=2)
    with pytest.raises(ValueError, match="eps schedule value at step 3"):
        attack(cnn, *batch, step=3)


def test_linear_warmup_rejects_bad_arguments():
    with pytest.raises(ValueError, match="warmup_steps"):
        linear_warmup(0.1, warmup_steps=-1)
    with pytest.raises(ValueError, match="eps must be"):
        linear_warmup(-0.1, warmup_steps=3)


def test_restarts_need_per_sample_objective(cnn, batch):
    with pytest.raises(ValueError, match="one loss per sample"):
        PGD(0.1, steps=1, restarts=2, criterion=lambda z, y: torch.nn.functional.cross_entropy(z, y))(cnn, *batch)
