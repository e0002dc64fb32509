"""Delta targets: the network predicts each state's increment over the lead time, in units of one stored step's
typical increment, and the model returns the next state ``x_state + scale · f(x, t)`` (Walrus, MPP, DPOT).

The reconstruction is a forward hook plus two non-persistent buffers on the family's own module, so the state
dict, the class, ``model.config`` and the FamilySpec are untouched: a delta checkpoint loads into the same
architecture, and every consumer (rollout, export, ONNX, fine-tuning metrics) calls ``model(x, t)`` and gets
states. The data spec saved with a checkpoint records ``target: delta`` and the scales by variable name
(``delta_scale``), from which :func:`sciformer.checkpoints.Checkpoint.build` re-attaches it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sciformer.errors import ConfigError

TARGETS = ("state", "delta")
MIN_SCALE = 1e-8


def delta_layout(spec: dict[str, Any]) -> tuple[list[int], list[float]]:
    """For each output variable: the input channel holding its current state, and its increment scale."""
    inputs, outputs = list(spec.get("inputs") or []), list(spec.get("outputs") or [])
    if spec.get("steady"):
        raise ConfigError("target: delta needs time-dependent data; a steady problem's solution has no previous "
                          "state to add an increment to (use target: state)")
    scales = spec.get("delta_scale") or {}
    not_inputs = [v for v in outputs if v not in inputs]
    no_scale = [v for v in outputs if v not in scales]
    if not_inputs:
        raise ConfigError(f"target: delta: outputs {not_inputs} are not inputs, so they have no current state")
    if no_scale:
        raise ConfigError(f"target: delta: no one-step difference statistics for {no_scale} (data spec "
                          "delta_scale); rebuild or convert the store with `sciformer data` so they are computed")
    # a field that never changes (increment scale 0) keeps unit scale instead of dividing by zero
    return [inputs.index(v) for v in outputs], [float(scales[v]) if scales[v] > MIN_SCALE else 1.0 for v in outputs]


def _add_state(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    x = args[0]
    shape = (1, -1) + (1,) * (output.ndim - 2)
    scale = module._delta_scale.to(output.dtype).view(shape)
    return x.index_select(1, module._delta_index).to(output.dtype) + scale * output


def attach_delta(model: nn.Module, spec: dict[str, Any]) -> nn.Module:
    """Make ``model(x, t)`` return ``x[:, state of each output] + scale · model_output`` (idempotent)."""
    if getattr(getattr(model, "config", None), "residual", False):
        raise ConfigError("target: delta replaces the model's own residual; set model_options residual: false")
    index, scale = delta_layout(spec)
    model.register_buffer("_delta_index", torch.tensor(index, dtype=torch.long), persistent=False)
    model.register_buffer("_delta_scale", torch.tensor(scale, dtype=torch.float32), persistent=False)
    if getattr(model, "_delta_hook", None) is None:
        model._delta_hook = model.register_forward_hook(_add_state)
    return model


def is_delta(model: nn.Module) -> bool:
    return getattr(model, "_delta_hook", None) is not None


def increments(model: nn.Module, x: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """``(states − x_state) / scale``: fields ``[B, C_out, *S]`` as the network's own increments (the loss of a
    delta model is taken on these, so each field's typical step weighs alike)."""
    shape = (1, -1) + (1,) * (states.ndim - 2)
    base = x.index_select(1, model._delta_index).to(states.dtype)
    return (states - base) / model._delta_scale.to(states.dtype).view(shape)
