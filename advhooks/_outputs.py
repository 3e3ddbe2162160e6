"""Read the logits out of whatever a model's forward returns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["call_model", "logits_of"]


def logits_of(output: Any) -> torch.Tensor:
    """Return the logits tensor from a model output.

    Accepts a tensor, a tuple/list whose first element is the logits, a mapping with a ``"logits"``
    key, or an object with a ``logits`` attribute (HuggingFace ``ModelOutput``).

    Args:
        output: what ``model(...)`` returned.

    Example:
        >>> logits_of((torch.zeros(2, 3), "aux")).shape
        torch.Size([2, 3])
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        if "logits" in output:
            return output["logits"]
    elif isinstance(output, (tuple, list)):
        if output and isinstance(output[0], torch.Tensor):
            return output[0]
    else:
        logits = getattr(output, "logits", None)
        if isinstance(logits, torch.Tensor):
            return logits
    raise ValueError(  # the user's model, not a bug of ours: one line in the CLI
        "cannot find logits in the model output: expected a tensor, a tuple whose first element is "
        f"the logits, or a dict/object with 'logits'; got {type(output).__name__}"
    )


def call_model(model: Any, inputs: torch.Tensor, input_key: str | None = None,
               model_kwargs: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Run ``model`` on ``inputs`` and return its logits.

    Args:
        model: any callable module.
        inputs: the tensor to feed.
        input_key: pass ``inputs`` as this keyword (``"pixel_values"``, ``"inputs_embeds"``) rather than
            positionally.
        model_kwargs: further keyword arguments (attention masks, ...).
    """
    kwargs = model_kwargs or {}
    out = model(inputs, **kwargs) if input_key is None else model(**{input_key: inputs}, **kwargs)
    return logits_of(out)
