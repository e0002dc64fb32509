"""Factorized attention (FactFormer, arXiv 2305.17560; IFactFormer, arXiv 2412.18840) on 2-D and 3-D grids.

Instead of one kernel over all ``N = n_1 ⋯ n_d`` points (``N²`` entries), each axis ``a`` gets its own
``n_a × n_a`` kernel computed from a learnable 1-D projection of the field onto that axis:

1. **Axis pooling** (one per axis): average the (normalised) field over every other axis, then
   ``Linear(c→c) → Linear(c→c) → LayerNorm → gated-GELU MLP → latent`` gives ``u_a: [B, n_a, latent]``.
   (FactFormer applies its two bias-free linears before the average; they commute with it, so applying them
   after is the same function at ``O(n_a c²)`` instead of ``O(N c²)`` cost.)
2. **Low-rank axis kernel** (one per axis, own weights): ``q = W_q u_a``, ``k = W_k u_a`` per head, a 1-D rotary
   embedding of the axis coordinate on both, and ``K_a = scaling · q kᵀ`` — **no softmax**, no diagonal term.
   Optional quadrature weights ``w_a`` (normalised to mean 1, so a uniform grid gives exactly 1) multiply the
   kernel's columns: ``(K_a V)_i = Σ_j K_a[i, j] w_j V_j`` approximates ``∫ k(x_i, y) v(y) dy`` on a
   non-uniform grid.
3. **Application** to the values ``V = W_v u`` (heads × dim_head):
   - ``mode="chained"`` (FactFormer, IFactFormer-o): ``K_z ×_z (K_y ×_y (K_x ×_x V))`` — a separable
     (Kronecker-product) kernel ``K[(i,l,r),(j,m,s)] = K_x[i,j] K_y[l,m] K_z[r,s]``;
   - ``mode="parallel"`` (IFactFormer-m): ``[K_x ×_x V, K_y ×_y V, K_z ×_z V]`` concatenated per head on
     channels — a sum of single-axis kernels after the output projection.
4. **Output**: instance norm over the domain (per channel, no affine) → ``Linear → GELU → Linear``.

Cost: kernels ``O(h Σ_a n_a² d_k)``, application ``O(h N Σ_a n_a d)``; memory ``O(h Σ_a n_a² + N h d)``,
versus ``O(N² d)`` time for full attention.

Shapes are channels-last: ``u [B, n_1, ..., n_d, dim] -> [B, n_1, ..., n_d, dim_out]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sciformer.kernels.instance_norm import instance_norm
from sciformer.nn.rope import RotaryEmbedding, apply_rotary

MODES = ("chained", "parallel")


def uniform_coordinates(n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Periodic uniform coordinates ``2π j / n`` (FactFormer's rotary coordinates live on ``[0, 2π]``)."""
    return torch.arange(n, device=device, dtype=dtype) * (2 * math.pi / n)


def quadrature_weights(coords: torch.Tensor, period: float | None = None) -> torch.Tensor:
    """Trapezoid-like cell widths of a sorted 1-D grid, normalised to mean 1 (a uniform grid gives ones).

    Interior point ``j`` gets ``(x_{j+1} − x_{j−1}) / 2``; with ``period`` the grid wraps around, otherwise the
    end points get half their one-sided spacing (the trapezoid rule).
    """
    x = coords.to(torch.float64)
    if x.ndim != 1 or x.numel() < 2:
        raise ValueError("quadrature weights need a 1-D grid with at least 2 points")
    if bool((x[1:] <= x[:-1]).any()):
        raise ValueError("grid coordinates must be strictly increasing")
    if period is not None:
        nxt = torch.cat((x[1:], x[:1] + period))
        prv = torch.cat((x[-1:] - period, x[:-1]))
        w = (nxt - prv) / 2
    else:
        w = torch.empty_like(x)
        w[1:-1] = (x[2:] - x[:-2]) / 2
        w[0] = (x[1] - x[0]) / 2
        w[-1] = (x[-1] - x[-2]) / 2
    return (w / w.mean()).to(coords.dtype if coords.is_floating_point() else torch.float32)


def apply_along_axis(kernel: torch.Tensor, v: torch.Tensor, axis: int) -> torch.Tensor:
    """``(K ×_a V)[..., i, ...] = Σ_j K[i, j] V[..., j, ...]`` along spatial axis ``a``.

    kernel [B, h, n_a, n_a]; v [B, h, n_1, ..., n_d, c] -> same shape as v. ``torch.einsum`` turns this into
    one batched matmul over (B, h) with the other axes folded into the columns.
    """
    nd = v.ndim - 3
    axes = "ijklm"[:nd]
    src = axes[:axis] + "z" + axes[axis + 1:]
    return torch.einsum(f"bh{axes[axis]}z,bh{src}c->bh{axes}c", kernel, v)


class AxisPooling(nn.Module):
    """Learnable projection of a field onto one axis: mean over the other axes, then an MLP.

    ``forward(m)`` takes the already averaged field ``m [B, n_a, dim]`` (see ``axis_mean``) and returns
    ``[B, n_a, latent_dim]``: ``Linear(no bias) → LayerNorm → Linear(dim→2·dim) → GELU(a)·g → Linear``.
    """

    def __init__(self, dim: int, latent_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim, bias=False)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(dim, latent_dim)

    @staticmethod
    def axis_mean(u: torch.Tensor, axis: int, weights: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Mean of ``u [B, *S, C]`` over every spatial axis but ``axis`` (quadrature-weighted if given)."""
        nd = u.ndim - 2
        others = [1 + a for a in range(nd) if a != axis]
        if weights is not None:
            for a in range(nd):
                if a != axis:
                    shape = [1] * u.ndim
                    shape[1 + a] = -1
                    u = u * weights[a].to(u.dtype).view(shape)
        return u.mean(dim=others) if others else u

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        a, g = self.fc1(self.norm(self.proj(m))).chunk(2, dim=-1)
        return self.fc2(F.gelu(a) * g)


class AxisKernel(nn.Module):
    """Low-rank kernel on one axis: ``K = scaling · (R q)(R k)ᵀ`` per head, no softmax.

    Args:
        latent_dim: channels of the pooled 1-D function.
        heads: number of kernels.
        dim_k: rank of each kernel (FactFormer: ``dim_head · kernel_multiplier``).
        rope: rotary embedding of the axis coordinate on q and k.
        rope_min_freq: coordinate stretch of the rotary embedding (FactFormer: 1/64).
        scaling: factor on ``q kᵀ``.
    """

    def __init__(self, latent_dim: int, heads: int, dim_k: int, rope: bool = True, rope_min_freq: float = 1 / 64,
                 scaling: float = 1.0):
        super().__init__()
        self.heads, self.dim_k, self.scaling = heads, dim_k, scaling
        self.to_q = nn.Linear(latent_dim, heads * dim_k, bias=False)
        self.to_k = nn.Linear(latent_dim, heads * dim_k, bias=False)
        # FactFormer's small initial gain keeps the un-normalised kernel sums small at the start.
        nn.init.xavier_uniform_(self.to_q.weight, gain=0.02)
        nn.init.xavier_uniform_(self.to_k.weight, gain=0.02)
        self.rope = RotaryEmbedding(dim_k, min_freq=rope_min_freq) if rope else None

    def forward(self, u: torch.Tensor, coords: torch.Tensor | None = None,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        """u [B, n, latent], coords [n] (needed with rope), weights [n] or None -> K [B, heads, n, n]."""
        b, n, _ = u.shape
        q = self.to_q(u).view(b, n, self.heads, self.dim_k).transpose(1, 2)  # [B, h, n, dk]
        k = self.to_k(u).view(b, n, self.heads, self.dim_k).transpose(1, 2)
        if self.rope is not None:
            if coords is None:
                raise ValueError("AxisKernel with rope needs the axis coordinates")
            freqs = self.rope(coords.to(u.device))
            q, k = apply_rotary(q, freqs), apply_rotary(k, freqs)
        kernel = (q @ k.transpose(-1, -2)) * self.scaling  # [B, h, n, n]
        if weights is not None:
            kernel = kernel * weights.to(kernel.dtype)
        return kernel


class FactorizedAttention(nn.Module):
    """One factorized-attention operator on a 2-D or 3-D grid (FactFormer's FABlock, IFactFormer's FABlock-m).

    Args:
        dim: input channels.
        spatial_dims: 2 or 3.
        heads, dim_head: value heads and channels per head.
        latent_dim: channels of the pooled 1-D functions (default ``dim``).
        kernel_multiplier: kernel rank per head is ``dim_head · kernel_multiplier``.
        mode: "chained" or "parallel".
        rope: rotary embedding of the axis coordinates in the kernels.
        rope_min_freq: see ``AxisKernel``.
        scaling: kernel scaling; ``None`` = FactFormer's rule (``1/√(dim_head·kernel_multiplier)`` when
            ``kernel_multiplier > 4``, else 1).
        dim_out: output channels (default ``dim``).

    The input is expected to be normalised already (the model applies its (time-conditioned) LayerNorm).
    ``forward(u, coords=None, weights=None)``: ``u [B, *S, dim]``; ``coords`` one 1-D tensor per axis (rotary
    positions; default ``2πj/n``); ``weights`` optional per-axis quadrature weights (mean 1).
    """

    def __init__(self, dim: int, spatial_dims: int = 2, heads: int = 8, dim_head: int = 64,
                 latent_dim: int | None = None, kernel_multiplier: int = 2, mode: str = "chained",
                 rope: bool = True, rope_min_freq: float = 1 / 64, scaling: float | None = None,
                 dim_out: int | None = None):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, not {spatial_dims}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        latent_dim = latent_dim or dim
        dim_out = dim_out or dim
        dim_k = dim_head * kernel_multiplier
        if scaling is None:
            scaling = 1 / math.sqrt(dim_k) if kernel_multiplier > 4 else 1.0
        self.spatial_dims, self.heads, self.dim_head, self.mode = spatial_dims, heads, dim_head, mode
        self.to_v = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_in = nn.Linear(dim, dim, bias=False)
        self.pool = nn.ModuleList(AxisPooling(dim, latent_dim) for _ in range(spatial_dims))
        self.kernel = nn.ModuleList(AxisKernel(latent_dim, heads, dim_k, rope, rope_min_freq, scaling)
                                    for _ in range(spatial_dims))
        mixed = heads * dim_head * (spatial_dims if mode == "parallel" else 1)
        self.out1 = nn.Linear(mixed, dim_out, bias=False)
        self.out2 = nn.Linear(dim_out, dim_out, bias=False)

    def _check(self, u: torch.Tensor) -> None:
        if u.ndim != self.spatial_dims + 2:
            raise ValueError(f"FactorizedAttention({self.spatial_dims}-D) expects [B, *{self.spatial_dims} axes, C], "
                             f"got shape {tuple(u.shape)}")

    def kernels(self, u: torch.Tensor, coords: Sequence[torch.Tensor] | None = None,
                weights: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """The per-axis kernels ``K_a [B, heads, n_a, n_a]`` for the normalised field ``u [B, *S, dim]``."""
        self._check(u)
        spatial = u.shape[1:-1]
        if coords is None:
            dtype = torch.promote_types(u.dtype, torch.float32)
            coords = [uniform_coordinates(n, u.device, dtype) for n in spatial]
        out = []
        for a in range(self.spatial_dims):
            m = self.to_in(AxisPooling.axis_mean(u, a, weights))  # [B, n_a, dim]
            ua = self.pool[a](m)  # [B, n_a, latent]
            out.append(self.kernel[a](ua, coords[a], None if weights is None else weights[a]))
        return out

    def mix(self, v: torch.Tensor, kernels: Sequence[torch.Tensor]) -> torch.Tensor:
        """Apply the kernels to the values ``v [B, h, *S, d]``: chained composition or parallel concatenation
        (``[B, h, *S, d]`` or ``[B, h, *S, spatial_dims·d]``)."""
        if self.mode == "chained":
            for a, k in enumerate(kernels):
                v = apply_along_axis(k, v, a)
            return v
        return torch.cat([apply_along_axis(k, v, a) for a, k in enumerate(kernels)], dim=-1)

    def forward(self, u: torch.Tensor, coords: Sequence[torch.Tensor] | None = None,
                weights: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        kernels = self.kernels(u, coords, weights)
        b, spatial = u.shape[0], u.shape[1:-1]
        v = self.to_v(u).view(b, *spatial, self.heads, self.dim_head).movedim(-2, 1)  # [B, h, *S, d]
        mixed = self.mix(v, kernels).movedim(1, -2).reshape(b, *spatial, -1)  # [B, *S, h·d(·axes)]
        # instance norm over the domain, per channel, no affine (FactFormer's to_out)
        return self.out2(F.gelu(self.out1(instance_norm(mixed))))
