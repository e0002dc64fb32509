"""Rotary position embedding (RoPE) on real-valued coordinates.

A vector ``q`` at coordinate ``p`` is rotated pairwise by angles ``p · scale / min_freq · ω_j`` with
``ω_j = base^(-2j/dim)`` (the "rotate-half" layout: channel ``j`` is paired with channel ``j + dim/2``).
Rotations compose, so ``<R(p) q, R(p') k>`` depends on ``p − p'`` only: a kernel built from rotated queries
and keys is translation-invariant in its position dependence. ``min_freq`` stretches the coordinate (FactFormer
uses ``min_freq = 1/64`` with coordinates on ``[0, 2π]``).

    rope = RotaryEmbedding(dim=32)
    freqs = rope(coords)               # coords [n] or [..., n] -> [..., n, dim]
    q = apply_rotary(q, freqs)         # q [..., n, dim]
"""

from __future__ import annotations

import torch
from torch import nn


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (−x2, x1) on the two halves of the last axis."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [..., n, dim]`` by the angles ``freqs [..., n, dim]`` (broadcast over leading axes)."""
    cos, sin = freqs.cos().to(x.dtype), freqs.sin().to(x.dtype)  # angles stay in full precision
    return x * cos + rotate_half(x) * sin


class RotaryEmbedding(nn.Module):
    """Angles of a 1-D rotary embedding for arbitrary (also non-uniform) coordinates.

    Args:
        dim: rotated channels (even).
        min_freq: coordinates are multiplied by ``scale / min_freq`` before the frequencies.
        scale: see ``min_freq``.
        base: frequency base (10000 as in the Transformer).
    """

    def __init__(self, dim: int, min_freq: float = 1 / 64, scale: float = 1.0, base: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"rotary dim must be even, got {dim}")
        self.dim, self.min_freq, self.scale = dim, min_freq, scale
        self.register_buffer("inv_freq", base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim),
                             persistent=False)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Angles ``[..., n, dim]`` for coordinates ``[..., n]`` (computed in float64, returned in coords' dtype
        if floating, else float32)."""
        out_dtype = coords.dtype if coords.is_floating_point() else torch.float32
        t = coords.to(torch.float64) * (self.scale / self.min_freq)
        angles = t[..., None] * self.inv_freq.to(coords.device)
        return torch.cat((angles, angles), dim=-1).to(out_dtype)
