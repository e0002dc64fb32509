"""Time-conditioned LayerNorm: the norm that makes an operator model continuous in time.

``y = γ(t) ⊙ (x − μ(x)) / sqrt(σ²(x) + eps) + β(t)`` with ``γ(t) = weight + weight_t·t`` and
``β(t) = bias + bias_t·t`` (affine in the lead time, as Poseidon's ``ConditionalLayerNorm``; its
``nn.Linear(1, C)`` pair maps one to one onto ``weight_t/weight`` and ``bias_t/bias``).

Initialisation departs from upstream on purpose: γ starts at 1 and β at 0 with zero slopes, so a fresh
model behaves like one with plain LayerNorms instead of starting with near-zero norm outputs
(upstream's N(0, 0.02) init of the Linear pair). ``t=None`` is a steady problem and means ``t = 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sciformer.kernels.layer_norm import layer_norm_gamma_beta, time_conditioned_layer_norm


class Modulation(NamedTuple):
    """γ(t), β(t) of every time-conditioned norm of a network, computed together (see :func:`modulations`).

    Passed where the lead time ``t`` goes (the modules in between hand it on unchanged); a norm reads its own
    part ``parts[norm.slot]`` [B or 1, 2, dim] (γ; β)."""

    parts: tuple[torch.Tensor, ...]


def plain_parameters(modules: Sequence[nn.Module]) -> bool:
    """True if every parameter of ``modules`` is a plain tensor, readable outside the modules' own forward
    (not a DTensor that FSDP2 gathers in the module's pre-forward hook)."""
    return all(type(p) in (nn.Parameter, torch.Tensor) for m in modules for p in m.parameters())


def assign_slots(norms: Sequence[TimeConditionedLayerNorm]) -> None:
    """Number the time-conditioned norms of a network: ``norm.slot`` indexes its part of a :class:`Modulation`."""
    for i, norm in enumerate(norms):
        norm.slot = i


def modulations(norms: Sequence[TimeConditionedLayerNorm], t: torch.Tensor | None) -> Modulation | None:
    """All norms' γ(t) = w + w_t·t and β(t) = b + b_t·t in one product ``[w|b] + t ⊗ [w_t|b_t]`` per step.

    Why: the GPU step is launch-bound; per norm this replaces two ``addcmul`` forward and two reductions
    backward by a share of one ``addmm`` (and one product backward). Returns None (each norm computes its own)
    when the parameters are sharded DTensors (FSDP2 gathers them per module, so they cannot be read here).
    """
    if not norms or not plain_parameters(norms):
        return None
    sizes = [n.dim for n in norms]
    # [w_1.., b_1.., w_t1.., b_t1..]: row 0 the constants, row 1 the slopes, each [γ parts | β parts]
    table = torch.cat([n.weight for n in norms] + [n.bias for n in norms] + [n.weight_t for n in norms]
                      + [n.bias_t for n in norms]).view(2, 2 * sum(sizes))
    const, slope = table.unbind(0)  # (not slices: their backward would write into zeros of the whole table)
    if t is None:  # steady: t = 1
        gb = (const + slope).view(1, 2, -1)
    else:
        gb = torch.addmm(const, t.to(table.dtype).view(-1, 1), slope[None]).view(-1, 2, sum(sizes))
    return Modulation(gb.split(sizes, dim=-1))


class TimeConditionedLayerNorm(nn.Module):
    """LayerNorm over the last axis whose affine parameters are affine functions of the lead time.

    Args:
        dim: size of the normalised (last) axis.
        time_conditioning: if False this is a plain LayerNorm and ``t`` is ignored.
        eps: added to the variance.
    """

    def __init__(self, dim: int, time_conditioning: bool = True, eps: float = 1e-5):
        super().__init__()
        self.dim, self.eps, self.time_conditioning = dim, eps, time_conditioning
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        if time_conditioning:
            self.weight_t = nn.Parameter(torch.zeros(dim))
            self.bias_t = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor | Modulation | None = None) -> torch.Tensor:
        """x: [B, ..., dim]; t: [B] lead times, None (steady, t = 1) or the network's :class:`Modulation`."""
        if not self.time_conditioning:
            return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
        if isinstance(t, Modulation):
            return layer_norm_gamma_beta(x, t.parts[self.slot], self.eps)
        # reference formula (and its fused fast path) in sciformer.kernels.layer_norm
        return time_conditioned_layer_norm(x, t, self.weight, self.bias, self.weight_t, self.bias_t, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, time_conditioning={self.time_conditioning}, eps={self.eps}"
