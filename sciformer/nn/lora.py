"""Low-rank adaptation (LoRA) of linear layers: W x + (α/r) B A x with A ~ Kaiming, B = 0.

At initialisation the adapted layer computes exactly the frozen layer's function; only A and B train. A 1×1
``nn.Conv1d`` is a linear map over channels (neuraloperator's channel MLPs) and is adapted the same way.

The wrapper exposes the effective ``weight`` (W + (α/r) B A, differentiable) and ``bias``, and the base
layer's other attributes: fast paths that read a layer's weight instead of calling it (scOT's fused qkv
projection, ``nn.MultiheadAttention``'s ``out_proj``) then compute the adapted function and train A and B.
"""

from __future__ import annotations

import copy
import math
import re

import torch
import torch.nn.functional as F
from torch import nn


def _check_adaptable(base: nn.Module) -> None:
    if isinstance(base, nn.Linear):
        return
    if isinstance(base, nn.Conv1d) and base.kernel_size == (1,) and base.groups == 1 and base.stride == (1,) \
            and base.padding in ((0,), "valid"):
        return
    raise TypeError(f"LoRA adapts nn.Linear and 1×1 nn.Conv1d layers, not {base!r}")


class LoRALinear(nn.Module):
    """Wraps a frozen ``nn.Linear`` (or 1×1 ``nn.Conv1d``) with a trainable rank-``r`` update."""

    def __init__(self, base: nn.Module, rank: int = 8, alpha: float = 16.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be ≥ 1, got {rank}")
        _check_adaptable(base)
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        out_f, in_f = base.weight.shape[:2]
        w = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, in_f, device=w.device, dtype=w.dtype))
        self.lora_b = nn.Parameter(torch.zeros(out_f, rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def __getattr__(self, name: str):
        """Attributes the wrapper lacks are the base layer's (``in_features``, ``out_channels``, ...), so code
        that inspects the layer it called keeps working."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base":
                raise
            return getattr(self.base, name)

    @property
    def weight(self) -> torch.Tensor:
        """The adapted weight W + (α/r) B A, in the base layer's shape."""
        w = self.base.weight
        return w + (self.scale * self.lora_b @ self.lora_a).view(w.shape)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.base, nn.Conv1d):  # [B, C, N]: the update as two 1×1 convolutions
            return self.base(x) + self.scale * F.conv1d(F.conv1d(x, self.lora_a[..., None]), self.lora_b[..., None])
        return self.base(x) + self.scale * F.linear(F.linear(x, self.lora_a), self.lora_b)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """A plain copy of the base layer computing the same function (for export and inference)."""
        out = copy.deepcopy(self.base)
        out.weight.copy_(self.weight)
        for p in out.parameters():
            p.requires_grad_(True)
        return out


def apply_lora(model: nn.Module, pattern: str, rank: int = 8, alpha: float = 16.0) -> list[str]:
    """Wrap every adaptable layer whose qualified name matches ``pattern``; return the names."""
    regex = re.compile(pattern)
    targets = [name for name, m in model.named_modules()
               if isinstance(m, (nn.Linear, nn.Conv1d)) and regex.search(name)]
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha))
    return targets


def merge_lora(model: nn.Module) -> list[str]:
    """Replace every LoRA wrapper by its merged layer (in place); return the names. The state dict then has
    the plain model's keys, so an export loads without knowing LoRA was used."""
    names = [name for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, getattr(parent, child).merged())
    return names


def lora_description(model: nn.Module) -> dict | None:
    """``{"rank", "alpha", "targets"}`` of the LoRA wrappers in ``model`` (None without any): what a reader
    needs to rebuild the wrapped model before merging."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    if not found:
        return None
    _, first = found[0]
    return {"rank": first.rank, "alpha": first.alpha, "targets": [name for name, _ in found]}
