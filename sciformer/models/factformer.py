"""FactFormer / IFactFormer: factorized-attention operator transformers on 2-D and 3-D grids.

References: Li, Shu, Barati Farimani, "Scalable Transformer for PDE Surrogate Modeling" (FactFormer,
arXiv 2305.17560, BaratiLab/FactFormer); Yang et al., "Implicit factorized transformer approach to fast
prediction of turbulent channel flows" (IFactFormer, arXiv 2412.18840, huiyu-2002/IFactFormer-m).
Our own implementation of the published design (see ``sciformer.nn.factorized_attention``).

    x [B, C_in, *S] ──Linear(C_in→dim) per point──► u [B, *S, dim]
      explicit: for each block:  u = u + PE_i(grid);  u = u + Attn_i(Norm_i(u, t))
      implicit: u = u + PE(grid);  n times:  u = u + Attn(Norm(u, t)) / n     (one shared block)
    ──Norm(u, t) → Linear → GELU → Linear──► [B, C_out, *S]

``Norm`` is the time-conditioned LayerNorm scOT uses (lead time ``t`` [B]; ``t=None`` is read as 1), so the
model plugs into all2all pretraining; ``time_conditioning=False`` gives plain LayerNorms (FactFormer).
``PE`` is a Gaussian Fourier feature map of the grid coordinates (fixed random frequencies, scale 8, as
FactFormer) followed by a learnable Linear. Upstream's latent-marching wrapper (propagator MLP, latent
steps, pushforward) is not part of this model: sciformer's rollout engine handles time stepping.

Grids: a uniform periodic grid ``x_j = j/n`` per axis by default; ``forward(x, t, coords=[...])`` takes
sorted per-axis coordinates (normalised to [0, 1]) for non-uniform grids, and ``quadrature=True`` weights
the kernel integrals by the cells' widths (uniform grids are unchanged by it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sciformer.errors import DataError
from sciformer.kernels.dispatch import require_finite
from sciformer.models.registry import register
from sciformer.models.spec import ChannelTensors, FamilySpec
from sciformer.nn.conditional_norm import TimeConditionedLayerNorm
from sciformer.nn.factorized_attention import MODES, FactorizedAttention, quadrature_weights


@dataclass
class FactFormerConfig:
    in_channels: int = 1
    out_channels: int = 1
    spatial_dims: int = 2          # 2 or 3
    dim: int = 128                 # width of the point-wise features
    depth: int = 4                 # explicit: number of stacked blocks; implicit: iterations of the shared block
    implicit: bool = False         # IFactFormer: one weight-shared block iterated `depth` times
    heads: int = 8
    dim_head: int = 64
    latent_dim: int | None = None  # channels of the pooled 1-D functions (default: dim)
    kernel_multiplier: int = 2     # kernel rank per head = dim_head * kernel_multiplier
    kernel_scaling: float | None = None  # None: FactFormer's rule (1/sqrt(rank) if kernel_multiplier > 4, else 1)
    mode: str = "chained"          # "chained" (FactFormer, IFactFormer-o) or "parallel" (IFactFormer-m)
    rope: bool = True
    rope_min_freq: float = 1 / 64
    fourier_scale: float = 8.0     # std of the Gaussian Fourier frequencies of the grid encoding
    time_conditioning: bool = True
    quadrature: bool = False       # weight kernel integrals by cell widths (non-uniform grids)
    periodic: bool = True          # grid wraps around (quadrature weights, default coordinates)
    seed: int = 0                  # seed of the fixed Fourier frequencies (saved in the state dict anyway)
    residual: bool = False         # predict the change: out = x[:, :out_channels] + f(x) (time-dependent stores
                                   # list the predicted states first among the inputs, then static fields)


class FactFormerBlock(nn.Module):
    """Pre-norm factorized attention: ``Attn(Norm(u, t))`` (the caller adds the residual)."""

    def __init__(self, cfg: FactFormerConfig):
        super().__init__()
        self.norm = TimeConditionedLayerNorm(cfg.dim, time_conditioning=cfg.time_conditioning)
        self.attn = FactorizedAttention(cfg.dim, cfg.spatial_dims, cfg.heads, cfg.dim_head, cfg.latent_dim,
                                        cfg.kernel_multiplier, cfg.mode, cfg.rope, cfg.rope_min_freq,
                                        cfg.kernel_scaling)

    def forward(self, u, t, coords, weights):
        return self.attn(self.norm(u, t), coords, weights)


class GridEncoding(nn.Module):
    """Gaussian Fourier features of the grid coordinates in [0, 1]^d: ``[sin 2πxB, cos 2πxB]`` (fixed B)."""

    def __init__(self, spatial_dims: int, dim: int, scale: float, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(spatial_dims, dim // 2, generator=g) * scale)
        self.dim = dim

    def forward(self, coords: Sequence[torch.Tensor]) -> torch.Tensor:
        grid = torch.stack(torch.meshgrid(*coords, indexing="ij"), dim=-1).to(self.freqs.dtype)  # [*S, d]
        proj = 2 * math.pi * grid @ self.freqs
        feats = torch.cat((proj.sin(), proj.cos()), dim=-1)
        return F.pad(feats, (0, self.dim - feats.shape[-1]))  # [*S, dim]


class FactFormer(nn.Module):
    config_class = FactFormerConfig
    spec = FamilySpec(
        kind="operator",
        sized_by_data=("in_channels", "out_channels"),
        channels=(ChannelTensors("inputs", r"^embed\.weight$", dims=(1,)),  # [dim, C_in]
                  ChannelTensors("outputs", r"^head2\.(weight|bias)$")),  # [C_out, dim], [C_out]
        adapters=r"^(embed|head1|head2)\.",
        time_conditioning=r"norm[^.]*\.(weight|bias)(_t)?$",
        lora_targets=r"attn\.(to_v|to_in|out1|out2|kernel\.\d+\.to_[qk])$",
        lr_groups={"embedding_recovery": r"^(embed|head1|head2)\.", "time_embedding": r"norm[^.]*\.(weight|bias)_t$"},
        no_weight_decay=r"^(embed|pos_proj\.\d+)\.weight$",
        blocks=r"blocks\.\d+",
    )

    def __init__(self, config: FactFormerConfig):
        super().__init__()
        cfg = self.config = config
        if cfg.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, not {cfg.spatial_dims}")
        if cfg.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {cfg.mode!r}")
        if cfg.depth < 1:
            raise ValueError("depth must be >= 1")
        if cfg.residual and cfg.in_channels < cfg.out_channels:
            raise ValueError("residual=True needs in_channels >= out_channels (outputs are the first input channels)")
        self.embed = nn.Linear(cfg.in_channels, cfg.dim)
        self.grid_encoding = GridEncoding(cfg.spatial_dims, cfg.dim, cfg.fourier_scale, cfg.seed)
        n_blocks = 1 if cfg.implicit else cfg.depth
        self.pos_proj = nn.ModuleList(nn.Linear(cfg.dim, cfg.dim) for _ in range(n_blocks))
        self.blocks = nn.ModuleList(FactFormerBlock(cfg) for _ in range(n_blocks))
        self.norm_out = TimeConditionedLayerNorm(cfg.dim, time_conditioning=cfg.time_conditioning)
        self.head1 = nn.Linear(cfg.dim, cfg.dim)
        self.head2 = nn.Linear(cfg.dim, cfg.out_channels)

    # ---- input checks ---------------------------------------------------------------------------
    def _check(self, x: torch.Tensor, t: torch.Tensor | None) -> None:
        cfg = self.config
        if x.ndim != cfg.spatial_dims + 2:
            raise DataError(f"FactFormer ({cfg.spatial_dims}-D) expects x [B, C, *{cfg.spatial_dims} spatial axes]; "
                            f"got shape {tuple(x.shape)} ({x.ndim - 2} spatial axes)")
        if x.shape[1] != cfg.in_channels:
            raise DataError(f"FactFormer expects {cfg.in_channels} input channels, got {x.shape[1]}")
        if any(n < 2 for n in x.shape[2:]):
            raise DataError(f"FactFormer needs at least 2 points per axis; got spatial shape {tuple(x.shape[2:])}")
        if t is not None and (t.ndim != 1 or t.shape[0] != x.shape[0]):
            raise DataError(f"lead time t must have shape [B]={x.shape[0]}, got {tuple(t.shape)}")
        # NaN/Inf: only as an opt-in debug check (a host sync each); the data side checks what it reads
        require_finite(x, "FactFormer input contains NaN or infinite values")
        require_finite(t, "lead time t contains NaN or infinite values")

    def _grid(self, spatial: Sequence[int], coords, device, dtype):
        """Unit coordinates per axis, rotary positions (2π·unit) and optional quadrature weights."""
        cfg = self.config
        if coords is None:
            unit = [torch.arange(n, device=device, dtype=dtype) / (n if cfg.periodic else n - 1)
                    for n in spatial]
        else:
            if len(coords) != cfg.spatial_dims:
                raise DataError(f"coords: expected {cfg.spatial_dims} axes, got {len(coords)}")
            unit = [torch.as_tensor(c, dtype=dtype, device=device) for c in coords]
            for a, (c, n) in enumerate(zip(unit, spatial)):
                if c.shape != (n,):
                    raise DataError(f"coords[{a}] has shape {tuple(c.shape)}, the grid has {n} points on that axis")
        rope_pos = [2 * math.pi * c for c in unit]
        weights = None
        if cfg.quadrature:
            weights = [quadrature_weights(c, 1.0 if cfg.periodic else None) for c in unit]
        return unit, rope_pos, weights

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None,
                coords: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """x [B, C_in, *S], t [B] lead time or None -> [B, C_out, *S]."""
        self._check(x, t)
        cfg = self.config
        unit, rope_pos, weights = self._grid(x.shape[2:], coords, x.device,
                                             torch.promote_types(x.dtype, torch.float32))
        u = self.embed(x.movedim(1, -1))  # [B, *S, dim]
        feats = self.grid_encoding(unit).to(u.dtype)  # [*S, dim]
        if cfg.implicit:
            block = self.blocks[0]
            u = u + self.pos_proj[0](feats)
            for _ in range(cfg.depth):
                u = u + block(u, t, rope_pos, weights) / cfg.depth
        else:
            for pos, block in zip(self.pos_proj, self.blocks):
                u = u + pos(feats)
                u = u + block(u, t, rope_pos, weights)
        out = self.head2(F.gelu(self.head1(self.norm_out(u, t)))).movedim(-1, 1)  # [B, C_out, *S]
        return x[:, :cfg.out_channels] + out if cfg.residual else out


# ---- named sizes -------------------------------------------------------------------------------------
# Upstream hyper-parameters (BaratiLab/FactFormer configs/*.yml, huiyu-2002/IFactFormer-m configs/IFactFormer.yml).
register("factformer-2d", FactFormer, spatial_dims=2, dim=128, depth=4, heads=8, dim_head=64, kernel_multiplier=2)
register("factformer-3d", FactFormer, spatial_dims=3, dim=128, depth=4, heads=6, dim_head=64, kernel_multiplier=3)
register("ifactformer-m", FactFormer, spatial_dims=3, dim=96, depth=10, implicit=True, heads=5, dim_head=96,
         kernel_multiplier=3, mode="parallel")
register("ifactformer-o", FactFormer, spatial_dims=3, dim=96, depth=10, implicit=True, heads=5, dim_head=96,
         kernel_multiplier=3, mode="chained")
# Small sizes for CPU runs and tests.
register("factformer-2d-tiny", FactFormer, spatial_dims=2, dim=32, depth=2, heads=4, dim_head=16, kernel_multiplier=2)
register("factformer-3d-tiny", FactFormer, spatial_dims=3, dim=32, depth=2, heads=4, dim_head=16, kernel_multiplier=2)
register("ifactformer-m-2d-tiny", FactFormer, spatial_dims=2, dim=32, depth=4, implicit=True, heads=4, dim_head=16,
         kernel_multiplier=2, mode="parallel")
