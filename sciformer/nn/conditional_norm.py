"""Time-conditioned LayerNorm: the norm that makes an operator model continuous in time.

``y = γ(t) ⊙ (x − μ(x)) / sqrt(σ²(x) + eps) + β(t)`` with ``γ(t) = weight + weight_t·t`` and
``β(t) = bias + bias_t·t`` (affine in the lead time, as Poseidon's ``ConditionalLayerNorm``; its
``nn.Linear(1, C)`` pair maps one to one onto ``weight_t/weight`` and ``bias_t/bias``).

Initialisation departs from upstream on purpose: γ starts at 1 and β at 0 with zero slopes, so a fresh
model behaves like one with plain LayerNorms instead of starting with near-zero norm outputs
(upstream's N(0, 0.02) init of the Linear pair). ``t=None`` is a steady problem and means ``t = 1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sciformer.kernels.layer_norm import time_conditioned_layer_norm


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

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, ..., dim]; t: [B] lead times or None (steady, t = 1)."""
        if not self.time_conditioning:
            return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
        # reference formula (and its fused fast path) in sciformer.kernels.layer_norm
        return time_conditioned_layer_norm(x, t, self.weight, self.bias, self.weight_t, self.bias_t, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, time_conditioning={self.time_conditioning}, eps={self.eps}"
