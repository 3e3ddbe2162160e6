"""θ̂ and the paper's R̂: the early-stopped model (the epoch with the smallest adversarial test loss so far)
and its adversarial training loss at those fixed weights, evaluated on a fixed training subset."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset

from .._distributed import Reducer, sum_across_processes, world_size
from .._validation import check_loss, check_positive_int
from ..attacks import PGD, Attack, unwrap_parallel
from ..best_epoch import BestEpoch
from ..evaluation import FixedSubset, evaluate_adversarial_loss
from ..uncertainty import MeanEstimate
from .budget import DEFAULT_BUDGET, SELECTION_STEPS, EvaluationBudget, check_budget, evaluation_passes

__all__ = ["EarlyStoppedRisk", "Evaluation", "rhat_estimates"]


@dataclass
class Evaluation:
    """What :meth:`PhaseMonitor.evaluate_with` was given: the model, the data and how to evaluate them."""

    model: nn.Module
    train_data: Any
    test_data: Any
    attack: Attack | None
    train_subset: FixedSubset | None
    test_subset: FixedSubset | None
    batch_size: int
    device: Any
    seed: int = 0
    selection_steps: int = SELECTION_STEPS
    budget: float = DEFAULT_BUDGET  # the share of the training passes the evaluations may cost

    @classmethod
    def build(cls, model: nn.Module, train_data: Any, test_data: Any, attack: Attack | None,
              train_subset: int | None, test_subset: int | None, seed: int, batch_size: int,
              device: Any, selection_steps: int = SELECTION_STEPS, budget: float = DEFAULT_BUDGET) -> Evaluation:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        model = unwrap_parallel(model)  # every rank holds the same weights: no DDP forward, no gradient hooks
        if world_size() > 1 and not all(d is None or _splittable(d) for d in (train_data, test_data)):
            raise TypeError("on several processes evaluate_with needs Datasets (each process evaluates its share of "
                            "the same samples, drawn by index), not loaders: pass loader.dataset")
        if attack is not None and not isinstance(attack, Attack):
            raise TypeError(f"attack must be an advhooks attack, got {type(attack).__name__}")
        # A subset is drawn from a Dataset by index; a loader is evaluated whole.
        subsets = [None if size is None else FixedSubset(check_positive_int("subset size", size), seed)
                   for size in (train_subset, test_subset)]
        subsets = [s if _splittable(d) else None for s, d in zip(subsets, (train_data, test_data), strict=True)]
        return cls(model, train_data, test_data, attack, subsets[0], subsets[1],
                   check_positive_int("batch_size", batch_size), device, int(seed),
                   check_positive_int("selection_steps", selection_steps), check_budget(budget))

    def attack_at(self, eps: float | None) -> Attack:
        """The evaluation attack: the one given, else PGD-10 in L∞ at the epoch's ε."""
        return self.attack if self.attack is not None else PGD(eps or 0.0, steps=10)

    def selection_attack_at(self, eps: float | None) -> Attack:
        """The attack of the adversarial test loss that chooses θ̂: the evaluation attack with at most
        ``selection_steps`` steps, and the default step size for that many."""
        attack = self.attack_at(eps)
        custom = type(attack).__call__ is not Attack.__call__  # (a subclass with its own call is used as it is)
        if custom or (attack.steps <= self.selection_steps and attack.restarts == 1):
            return attack
        return Attack(dataclasses.replace(attack.config, steps=min(attack.steps, self.selection_steps),
                                          step_size=None, restarts=1))

    def passes(self, eps: float | None) -> dict[str, int]:
        """Planned passes of one test-loss evaluation (``"test"``) and one R̂ evaluation with its clean loss
        (``"rhat"``); 0 where the number of samples is not known before evaluating (an iterable)."""
        return {"test": _samples(self.test_data, self.test_subset) * evaluation_passes(self.selection_attack_at(eps)),
                "rhat": _samples(self.train_data, self.train_subset) * evaluation_passes(self.attack_at(eps), 1)}

    def adversarial_loss(self, data: Any, subset: FixedSubset | None, eps: float | None,
                         reducer: Reducer | None, attack: Attack | None = None) -> MeanEstimate:
        """The mean adversarial loss of the model's current weights on the fixed subset of ``data``, the work
        shared between the processes: the same samples, each with its own random start drawn from
        ``(seed, index, ε)``, so the same estimate whatever their number and whatever training drew; the global
        random generators are left as they were, so that training draws the same with or without the monitor."""
        cuda = [d for d in {p.device for p in self.model.parameters()} if d.type == "cuda"]
        with torch.random.fork_rng(devices=cuda):  # (a loader draws its seed: training's random stream stays its own)
            estimate, _ = evaluate_adversarial_loss(self.model, data, attack or self.attack_at(eps), eps=eps,
                                                    subset=subset, batch_size=self.batch_size, device=self.device,
                                                    split=_splittable(data), reducer=reducer, seed=self.seed)
        return estimate


def rhat_estimates(rhat: Mapping[str, Any]) -> tuple[MeanEstimate, MeanEstimate | None]:
    """R̂ and, once evaluated at θ̂'s fixed weights, the clean loss there, from θ̂'s record (``rhat`` of the monitor
    or of a run record: plain values)."""
    n, population = int(rhat.get("n") or 1), int(rhat.get("population") or 1)
    clean = rhat.get("clean_mean")
    return (MeanEstimate(float(rhat["mean"]), float(rhat.get("stderr") or 0.0), n, population),
            None if clean is None else MeanEstimate(float(clean), float(rhat.get("clean_stderr") or 0.0), n,
                                                    population))


def _samples(data: Any, subset: FixedSubset | None) -> int:
    """How many samples an evaluation of ``data`` (a Dataset or a loader of one) reads; 0 when unknown."""
    dataset = data if isinstance(data, Dataset) else getattr(data, "dataset", None)
    try:
        population = len(dataset)
    except TypeError:
        return 0
    return population if subset is None else min(subset.size, population)


def _splittable(data: Any) -> bool:
    """A map-style Dataset: its samples can be chosen by index and shared between processes."""
    return isinstance(data, Dataset) and not isinstance(data, IterableDataset)


class EarlyStoppedRisk:
    """Tracks θ̂ from the adversarial test losses and holds R̂ of θ̂ (``rhat``) for the verdict.

    ``rhat`` is ``{"epoch", "mean", "stderr", "n", "population", "kind"}``: kind ``"running mean"`` (θ̂'s
    running mean, until its fixed-weights R̂ is evaluated) or ``"fixed weights"`` (the paper's R̂, then also
    ``"clean_mean"`` / ``"clean_stderr"``: the clean loss of θ̂ on the same samples, which tells a model that does not
    learn from one that a strong attack breaks).
    """

    def __init__(self) -> None:
        self.evaluation: Evaluation | None = None
        self.budget = EvaluationBudget()
        self.reset()

    def reset(self) -> None:
        self.rhat: dict[str, Any] | None = None
        self.theta_hat_weights: dict[str, torch.Tensor] | None = None  # a copy of θ̂'s state dict, on its device
        self._pending = False  # θ̂'s fixed-weights R̂ is not evaluated yet
        self.seconds = {"test": 0.0, "rhat": 0.0}  # wall time of the monitor's own evaluations
        self.budget.trained = self.budget.spent = 0.0
        self.budget.first_rhat_owed = True
        self._costs = {"test": 0, "rhat": 0}  # passes of one evaluation of each: planned, else the last measured
        self._planned_end = False

    def evaluate_epoch(self, number: int, total_epochs: int | None, given: float | None,
                       earlier: Sequence[float | None], running_mean: float, *, passes: float, due: bool,
                       eps: float | None, reducer: Reducer | None) -> float | None:
        """The monitor's evaluations at the end of epoch ``number`` (its training ``passes`` counted): a pending R̂ of an
        earlier θ̂ first (the verdict reads it), then the test loss, θ̂'s move (:meth:`keep_theta_hat`) and its R̂; each
        while the budget affords it, and all of them at the last planned epoch or with no plan. Returns the test loss
        (``None``: not known this epoch)."""
        final = total_epochs is None or number >= total_epochs
        self._open_epoch(passes, eps, planned_end=total_epochs is not None)
        self.settle(due=due, eps=eps, reducer=reducer, forced=final)
        test_loss = self.test_loss(given, eps, reducer, final=final, due=due)
        self.keep_theta_hat(number, test_loss, earlier, running_mean)
        self.settle(due=due, eps=eps, reducer=reducer, forced=final)
        return test_loss

    def _open_epoch(self, trained_passes: float, eps: float | None, planned_end: bool) -> None:
        """Count the epoch's training passes and the planned cost of each evaluation."""
        self.budget.trained += trained_passes
        self._planned_end = planned_end
        if self.evaluation is not None:
            self.budget.share = self.evaluation.budget
            planned = self.evaluation.passes(eps)
            self._costs = {k: planned[k] or self._costs[k] for k in planned}

    def _owed(self) -> float:
        """What the reserved evaluations still to come will cost: the last planned epoch's test loss and R̂, and
        while the warm-up's R̂ is owed, that R̂ (with the test loss that makes a θ̂ when there is none yet)."""
        if not self._planned_end:
            return 0.0
        test, rhat = self._costs["test"] * self._evaluates_test, self._costs["rhat"] * self.evaluates_rhat
        first = (rhat + test * (self.theta_hat_weights is None)) * (self.budget.first_rhat_owed and self.evaluates_rhat)
        return test + rhat + first

    def _affords(self, passes: float) -> bool:
        return self.budget.affords(passes, self._owed())

    @property
    def _evaluates_test(self) -> bool:
        return self.evaluation is not None and self.evaluation.test_data is not None

    def _spend(self, kind: str, estimate: MeanEstimate, per_sample: int, started: float) -> None:
        self.seconds[kind] += time.perf_counter() - started
        self._costs[kind] = self._costs[kind] or int(estimate.n) * per_sample
        self.budget.spent += int(estimate.n) * per_sample

    @property
    def evaluates_rhat(self) -> bool:
        """Whether R̂ at θ̂'s fixed weights can be evaluated (a model and training data were given)."""
        return self.evaluation is not None and self.evaluation.train_data is not None

    def test_loss(self, given: float | None, eps: float | None, reducer: Reducer | None = None,
                  final: bool = True, due: bool = False) -> float | None:
        """The epoch's adversarial test loss: the loop's (its mean over the processes, so that every process decides
        θ̂ alike), else evaluated under the selection attack when test data was given and the budget affords it
        (always at the ``final`` epoch; once R̂ is ``due``, only when it also affords the R̂ of a θ̂ it moves, so
        that the verdict never reads a new θ̂'s running mean); ``None``: not known this epoch."""
        if given is not None:
            given = check_loss("adv_test_loss", given)  # NaN or inf: the run diverged, recorded, not raised
            if reducer is None and world_size() == 1:
                return given
            total, count = sum_across_processes(torch.tensor([given, 1.0], dtype=torch.float64), reducer).tolist()
            return total / count
        ev = self.evaluation
        first = due and self.evaluates_rhat and self.budget.first_rhat_owed  # (reserved: made whatever the budget)
        cost = self._costs["test"] + (self._costs["rhat"] if due and self.evaluates_rhat and not first else 0)
        if not self._evaluates_test or not (final or first or self._affords(cost)):
            return None
        started = time.perf_counter()
        attack = ev.selection_attack_at(eps)
        estimate = ev.adversarial_loss(ev.test_data, ev.test_subset, eps, reducer, attack)
        self._spend("test", estimate, evaluation_passes(attack), started)
        return estimate.mean

    def keep_theta_hat(self, epoch: int, test_loss: float | None, earlier: Sequence[float | None],
                       running_mean: float) -> bool:
        """θ̂ moves to ``epoch`` when its adversarial test loss is finite and the smallest so far (``earlier``: the
        others; an epoch whose test loss or running mean is NaN or inf never becomes θ̂); returns whether it moved.

        Its weights are copied (``theta_hat_weights``: on their device, no host sync, moved to the CPU once its R̂ is
        evaluated; what ``save_record(weights=True)`` writes) and its R̂ becomes pending: :meth:`settle` evaluates
        it at those fixed weights when it is due (after the warm-up, at the last planned epoch, or for a record:
        early epochs improve nearly every time and the verdict is provisional then anyway). Until then the verdict
        uses θ̂'s running mean. Nothing is evaluated here.
        """
        if not math.isfinite(running_mean) or not BestEpoch.of(earlier).update(epoch, test_loss):
            return False
        self.rhat = {"epoch": epoch, "mean": running_mean, "stderr": 0.0, "n": None, "population": None,
                     "kind": "running mean"}
        if self.evaluates_rhat:
            self.theta_hat_weights = {k: v.detach().clone() for k, v in self.evaluation.model.state_dict().items()}
            self._pending = True
        return True

    def kept_weights(self) -> dict[str, torch.Tensor]:
        """θ̂'s weights, or a ValueError when there are none (the monitor keeps them only when it evaluates)."""
        if self.theta_hat_weights is None:
            raise ValueError("no early-stopped weights to save: the monitor keeps them when it evaluates the run "
                             "itself (evaluate_with(model, train_data, test_data)), from the first epoch after a "
                             "start or a resume (load_state_dict restores the record, not the weights)")
        return self.theta_hat_weights

    def settle(self, *, due: bool, eps: float | None, reducer: Reducer | None = None, forced: bool = True) -> bool:
        """Evaluate the pending R̂ of θ̂'s kept weights when it is ``due`` and ``forced`` or the budget affords it;
        returns whether it evaluated."""
        ev, weights = self.evaluation, self.theta_hat_weights
        if not self._pending or weights is None or ev is None or not due:
            return False
        if not (forced or self.budget.first_rhat_owed or self._affords(self._costs["rhat"])):
            return False
        started = time.perf_counter()
        current = {k: v.detach().clone() for k, v in ev.model.state_dict().items()}
        try:
            ev.model.load_state_dict(weights)
            est = ev.adversarial_loss(ev.train_data, ev.train_subset, eps, reducer)
            clean = ev.adversarial_loss(ev.train_data, ev.train_subset, 0.0, reducer)  # (one forward pass: "learning?")
        finally:
            ev.model.load_state_dict(current)
        self._spend("rhat", est, evaluation_passes(ev.attack_at(eps), 1), started)
        self.rhat.update(mean=est.mean, stderr=est.stderr, n=est.n, population=est.population, kind="fixed weights",
                         clean_mean=clean.mean, clean_stderr=clean.stderr)
        self._pending, self.budget.first_rhat_owed = False, False
        # Kept for save_record(weights=True), off the accelerator: no second copy of the model there all run.
        self.theta_hat_weights = {k: v.to("cpu") for k, v in weights.items()}
        return True

    @property
    def pending(self) -> bool:
        """Whether θ̂'s weights are kept and their R̂ is still to be evaluated."""
        return self._pending

    def state_dict(self) -> dict[str, Any]:
        """θ̂'s record and, while its R̂ is pending, its weights (CPU tensors: what a resume needs to evaluate
        it); once R̂ is evaluated only plain values."""
        state: dict[str, Any] = {"rhat": None if self.rhat is None else dict(self.rhat), **self.budget.state_dict(),
                                 "budget_costs": dict(self._costs)}
        if self._pending and self.theta_hat_weights is not None:
            state["theta_hat_weights"] = {k: v.detach().to("cpu") for k, v in self.theta_hat_weights.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (θ̂'s weights go back to the model's device when it is known)."""
        self.rhat = None if state.get("rhat") is None else dict(state["rhat"])
        self.budget.load_state_dict(state, measured=self.rhat is not None and self.rhat.get("kind") == "fixed weights")
        self._costs = {k: int((state.get("budget_costs") or {}).get(k) or 0) for k in ("test", "rhat")}
        weights = state.get("theta_hat_weights")
        self._pending = weights is not None
        if weights is not None:
            device = None
            if self.evaluation is not None:
                device = next((p.device for p in self.evaluation.model.parameters()), None)
            self.theta_hat_weights = {k: torch.as_tensor(v).to(device) if device else torch.as_tensor(v)
                                      for k, v in weights.items()}

    def clean_loss(self) -> MeanEstimate | None:
        """The clean loss at θ̂'s fixed weights on R̂'s samples, once R̂ is evaluated."""
        return None if self.rhat is None else rhat_estimates(self.rhat)[1]

    def verdict(self, running_means: Sequence[float]) -> tuple[MeanEstimate | None, str]:
        """The R̂ the verdict uses and its kind (``"provisional"``: the best running mean, no θ̂ known)."""
        if self.rhat is not None:
            return rhat_estimates(self.rhat)[0], self.rhat["kind"]
        finite = [v for v in running_means if math.isfinite(v)]
        return (MeanEstimate(min(finite), 0.0, 1, 1) if finite else None), "provisional"
