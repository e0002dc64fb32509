"""ADiT's latent Diffusion Transformer: one token per atom, adaLN-Zero blocks, no patching.

Input token = Linear(concat(noisy latent x_t, self-conditioning estimate)) + sinusoid(atom index). The
conditioning vector ``c = t_emb + dataset_emb + spacegroup_emb (+ property_emb)`` modulates every block
(shift/scale/gate for attention and MLP, zero-initialised). Labels use index 0 as the null class and are dropped
with probability ``class_dropout`` during training for classifier-free guidance. The network predicts the clean
latent x̂₁. **Property conditioning** (new here; ADiT is unconditional, its issue #5): ``num_properties`` scalar
labels, each with a presence mask, embedded by an MLP of (values·mask, mask); absent or dropped labels read as
"unknown". Measured ADiT sizes (fact sheet, latent 8, with the 231-entry space-group table): S 32.56 M,
B 129.71 M, L 457.03 M.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sciformer.models.adit.autoencoder import sinusoid
from sciformer.models.spec import FamilySpec


@dataclass
class DiTConfig:
    latent_dim: int = 8
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    num_datasets: int = 2  # 0 = crystals, 1 = molecules (ADiT's dataset_idx); +1 null class
    num_spacegroups: int = 230
    num_properties: int = 0
    class_dropout: float = 0.1
    time_freq_dim: int = 256


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Multi-head self-attention through SDPA with a key-padding mask."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask):
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = mask[:, None, None, :]  # [B, 1, 1, N] True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(y.transpose(1, 2).reshape(B, N, D))


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, c, mask):
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_a[:, None] * self.attn(modulate(self.norm1(x), shift_a, scale_a), mask)
        return x + gate_m[:, None] * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class LatentDiT(nn.Module):
    """x̂₁ = DiT(x_t, t, labels); shapes: x_t [B, N, L], t [B], mask [B, N] (True = atom)."""

    config_class = DiTConfig
    spec = FamilySpec(
        kind="generative",
        adapters=r"^(x_embed|final|dataset_embed|spacegroup_embed|property_embed)\.",
        time_conditioning=r"^t_embed\.",
        lora_targets=r"blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.0|mlp\.2)$",
        lr_groups={"embedding_recovery": r"^(x_embed|final)\.", "time_embedding": r"^t_embed\."},
        no_weight_decay=r"^(dataset_embed|spacegroup_embed|x_embed|(t_embed|property_embed)\.\d+)\.weight$",
        blocks=r"blocks\.\d+",
    )

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = cfg = config
        h = cfg.hidden_size
        self.x_embed = nn.Linear(2 * cfg.latent_dim, h)
        self.t_embed = nn.Sequential(nn.Linear(cfg.time_freq_dim, h), nn.SiLU(), nn.Linear(h, h))
        self.dataset_embed = nn.Embedding(cfg.num_datasets + 1, h)
        self.spacegroup_embed = nn.Embedding(cfg.num_spacegroups + 1, h)
        self.property_embed = (nn.Sequential(nn.Linear(2 * cfg.num_properties, h), nn.SiLU(), nn.Linear(h, h))
                               if cfg.num_properties > 0 else None)
        self.blocks = nn.ModuleList([DiTBlock(h, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.final = FinalLayer(h, cfg.latent_dim)
        self._init()

    def _init(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.dataset_embed.weight, std=0.02)
        nn.init.normal_(self.spacegroup_embed.weight, std=0.02)
        for lin in self.t_embed:
            if isinstance(lin, nn.Linear):
                nn.init.normal_(lin.weight, std=0.02)
        for blk in self.blocks:  # adaLN-Zero: every block starts as the identity
            nn.init.zeros_(blk.adaLN_modulation[-1].weight)
            nn.init.zeros_(blk.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    def _drop(self, keep: torch.Tensor) -> torch.Tensor:
        if self.training and self.config.class_dropout > 0:
            keep = keep & (torch.rand(keep.shape, device=keep.device) >= self.config.class_dropout)
        return keep

    def condition(self, t, dataset_idx=None, spacegroup=None, properties=None, property_mask=None, null: bool = False):
        """Conditioning vector [B, H]. ``dataset_idx`` 0-based (or -1 = unknown); spacegroup 1..230 (0 = none);
        ``null=True`` gives the unconditional vector used by classifier-free guidance."""
        B = t.shape[0]
        c = self.t_embed(sinusoid(t * 1000.0, self.config.time_freq_dim))
        ds = torch.full((B,), -1, dtype=torch.long, device=t.device) if dataset_idx is None else dataset_idx.long()
        keep = self._drop(ds >= 0) & (not null)
        c = c + self.dataset_embed(torch.where(keep, ds + 1, torch.zeros_like(ds)))
        sg = torch.zeros(B, dtype=torch.long, device=t.device) if spacegroup is None else spacegroup.long()
        keep = self._drop(sg > 0) & (not null)
        c = c + self.spacegroup_embed(torch.where(keep, sg, torch.zeros_like(sg)))
        if self.property_embed is not None:
            P = self.config.num_properties
            vals = torch.zeros(B, P, device=t.device) if properties is None else properties.float()
            pm = torch.zeros(B, P, dtype=torch.bool, device=t.device) if property_mask is None else property_mask.bool()
            pm = self._drop(pm) & (not null)
            vals = torch.where(pm, vals, torch.zeros_like(vals))
            c = c + self.property_embed(torch.cat([vals, pm.float()], -1))
        return c

    def forward(self, x_t, t, mask, x_self_cond=None, dataset_idx=None, spacegroup=None, properties=None,
                property_mask=None, null: bool = False):
        sc = torch.zeros_like(x_t) if x_self_cond is None else x_self_cond
        idx = torch.arange(x_t.shape[1], device=x_t.device).expand(x_t.shape[:2])
        x = self.x_embed(torch.cat([x_t, sc], -1)) + sinusoid(idx, self.config.hidden_size)  # [B, N, H]
        c = self.condition(t, dataset_idx, spacegroup, properties, property_mask, null)
        for blk in self.blocks:
            x = blk(x, c, mask)
        return self.final(x, c) * mask[..., None].to(x.dtype)  # padded tokens zeroed
