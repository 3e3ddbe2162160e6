"""PGD's whole k-step loop captured as one CUDA graph: ``PGD(eps, cuda_graph=True)``.

For small models eager PyTorch is launch-bound: each of the k iterations launches dozens of kernels from
Python. Capturing the loop once per batch shape (static input, target and δ buffers; the random start
drawn inside the graph from the CUDA generator) and replaying it launches them all at once. The model's
parameters and buffers are read where they live, so the graph follows the optimiser's in-place updates;
a new batch shape (or dtype, ε, ...) is captured anew, and the captures are cached on the attack, the
:data:`MAX_CAPTURES` most recently used: an ε schedule that changes ε at every step recaptures at every step
(it gains nothing from the graph, and a warning says so once) but holds no more than that many graphs.

What the graph path does not do, and says so: CPU inputs, ``restarts > 1``, ``model_kwargs`` and an
explicit ``generator``. The input checks (NaN, bounds, label range) still cost one host read per call,
outside the graph; ``out_of_bounds="clamp"`` skips them. Replacing the model's parameter tensors (not
updating them in place) needs a new attack object.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._outputs import call_model
from .checks import InputChecks, check_call
from .config import AttackConfig
from .criteria import Criterion
from .functional import apply_delta, ascent, delta_box
from .model_state import attack_mode, autocast_loss_scale
from .norms import Region, random_in_ball_

__all__ = ["MAX_CAPTURES", "GraphedAttack"]

MAX_CAPTURES = 8
"""CUDA-graph captures kept per attack (each holds its graph's memory and static buffers)."""

log = logging.getLogger("advhooks.attacks")

_WARMUP_ITERATIONS = 3  # CUDA graphs want the kernels' lazy setup done on a side stream before capture


@dataclass
class _Capture:
    graph: Any
    x: torch.Tensor
    targets: torch.Tensor
    out: torch.Tensor
    classes: int


class GraphedAttack:
    """The captures of one attack: per model, batch shape, ε, criterion and config (a frozen
    :class:`AttackConfig`, so a changed setting is a new config and a new capture)."""

    def __init__(self) -> None:
        self._captures: OrderedDict[tuple, Any] = OrderedDict()
        self.evicted = 0  # captures dropped for newer ones

    def __len__(self) -> int:
        return len(self._captures)

    def cached(self, key: tuple, make: Callable[[], Any]) -> Any:
        """The capture under ``key``, made by ``make`` when missing; the least recently used one is dropped beyond
        :data:`MAX_CAPTURES`."""
        capture = self._captures.get(key)
        if capture is not None:
            self._captures.move_to_end(key)
            return capture
        capture = self._captures[key] = make()
        while len(self._captures) > MAX_CAPTURES:
            self._captures.popitem(last=False)
            self.evicted += 1
            if self.evicted == MAX_CAPTURES:
                log.warning("cuda_graph=True has captured %d graphs for new settings (an eps schedule, changing batch "
                            "shapes): each new one is captured anew, which costs more than it saves; use "
                            "cuda_graph=True with a constant eps and batch shape", 2 * MAX_CAPTURES)
        return capture

    def __call__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, config: AttackConfig, *,
                 eps: float | None = None, step: int = 0, criterion: Criterion | None = None,
                 input_key: str | None = None, model_kwargs: Any = None, generator: Any = None) -> torch.Tensor:
        if model_kwargs or generator is not None:
            raise ValueError("cuda_graph=True takes no model_kwargs and no generator (the capture is static)")
        eps, criterion = check_call(config, inputs, targets, eps, step, criterion)
        if inputs.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs CUDA inputs, got inputs on {inputs.device}")
        domain = config.domain
        placed = domain.place(inputs)
        key = (id(model), tuple(inputs.shape), inputs.dtype, inputs.device, tuple(targets.shape), targets.dtype,
               eps, id(criterion), input_key, id(config))
        capture = self.cached(key, lambda: self._capture(model, inputs, targets, config, eps, criterion, placed,
                                                         input_key))
        if config.out_of_bounds == "clamp":
            if domain.is_bounded:
                inputs = torch.clamp(inputs, placed.input_low, placed.input_high)
        else:
            InputChecks(inputs.detach(), domain, placed).read(
                torch.empty(inputs.shape[0], capture.classes, device="meta"), targets)
        capture.x.copy_(inputs.detach())
        capture.targets.copy_(targets)
        with attack_mode(model, config.bn):
            capture.graph.replay()
        out = capture.out.clone()  # the static buffer is overwritten by the next replay
        if inputs.requires_grad:  # embeddings: keep the graph to the inputs, as the eager path does
            out = inputs + (out - inputs.detach())
        return out

    def _capture(self, model, inputs, targets, config, eps, criterion, placed, input_key) -> _Capture:
        static_x = inputs.detach().clone()
        static_targets = targets.clone()
        device_type = inputs.device.type
        domain, norm = config.domain, config.norm
        with attack_mode(model, config.bn) as module:
            classes = int(call_model(module, static_x[:1], input_key).shape[-1])

            def body() -> torch.Tensor:
                autocast = (torch.autocast(device_type, dtype=config.precision_dtype)
                            if config.precision_dtype is not None else torch.autocast(device_type, enabled=False))
                with torch.enable_grad(), autocast:
                    low, high = delta_box(static_x, domain, placed, norm, eps)
                    delta = torch.zeros_like(static_x)
                    if config.random_start:
                        random_in_ball_(delta, norm, eps)
                        if low is not None:
                            delta.clamp_(low, high)
                    inv_std = placed.inv_std

                    def forward(d: torch.Tensor) -> torch.Tensor:
                        adv = static_x + d if inv_std is None else static_x + d * inv_std
                        return call_model(module, adv, input_key)

                    delta = ascent(config)(delta, forward, criterion, static_targets,
                                           region=Region(norm, eps, low, high), steps=config.steps,
                                           step_size=config.step_size_for(eps), sign=-1.0 if config.targeted else 1.0,
                                           loss_scale=autocast_loss_scale(device_type))
                    return apply_delta(static_x, delta, domain, placed)

            side = torch.cuda.Stream(device=inputs.device)
            side.wait_stream(torch.cuda.current_stream(inputs.device))
            with torch.cuda.stream(side):
                for _ in range(_WARMUP_ITERATIONS):
                    body()
            torch.cuda.current_stream(inputs.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = body()
        return _Capture(graph, static_x, static_targets, static_out, classes)
