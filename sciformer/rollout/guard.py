"""Blow-up guard: a trajectory stops at the first step whose prediction holds a non-finite value or a value
outside its data range ``[lo, hi]`` (per variable, over the trajectory's available ground truth) widened
``factor``-fold about its centre; the step is recorded and the other trajectories continue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class BlowupGuard:
    """Per trajectory and channel: stop when a value is non-finite or ``|x − mid| > factor · half``.

    ``mid``/``half`` [B, C] are the centre and half-width of each trajectory's data range (in the units the
    checked tensor uses); ``factor = inf`` only checks finiteness.
    """

    mid: torch.Tensor
    half: torch.Tensor
    factor: float = 10.0

    @classmethod
    def from_range(cls, lo: torch.Tensor, hi: torch.Tensor, factor: float) -> BlowupGuard:
        mid, half = (hi + lo) / 2, (hi - lo) / 2
        floor = 1e-6 * torch.maximum(lo.abs(), hi.abs()).clamp_min(1.0)
        return cls(mid, torch.maximum(half, floor), float(factor))

    def __call__(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [b, C, *S] (rows ``rows`` of the guard's batch): bool [b], True where the trajectory blew up."""
        mid, half = (self.mid, self.half) if rows is None else (self.mid[rows], self.half[rows])
        flat = x.float().flatten(2)
        bad = ~torch.isfinite(flat).all(-1).all(-1)
        if math.isfinite(self.factor):
            dev = (flat - mid.unsqueeze(-1)).abs().nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).amax(-1)
            bad |= (dev > self.factor * half).any(-1)
        return bad
