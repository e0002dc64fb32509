"""ADiT's all-atom autoencoder: one token per atom for molecules and crystals alike.

Encoder token = Embedding(Z) + MLP(Cartesian position, nm) + MLP(fractional coordinates) + sinusoid(atom index);
a pre-norm Transformer encoder; a diagonal Gaussian latent of ``latent_dim`` per atom. The decoder is a second
Transformer over latent tokens with heads for atom types, positions (nm), fractional coordinates (per token) and
the lattice (3 lengths / N^(1/3) and 3 angles in radians, from the mean-pooled tokens). Molecules carry zero
fractional coordinates and lattice; crystals carry both. Sizes as measured in ADiT's fact sheet: encoder
25.80 M, decoder 25.28 M, total 51.09 M (d_model 512, 8 heads, FFN 2048, 8 + 8 layers, latent 8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sciformer.models.spec import FamilySpec


@dataclass
class AutoencoderConfig:
    d_model: int = 512
    num_heads: int = 8
    dim_feedforward: int = 2048
    encoder_layers: int = 8
    decoder_layers: int = 8
    latent_dim: int = 8
    num_atom_types: int = 100  # index 0 is the mask token (used by denoising corruption)
    dropout: float = 0.0


def sinusoid(index: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer (or real) positions: [...] → [..., dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=index.device, dtype=torch.float32) / half)
    args = index.float()[..., None] * freqs
    emb = torch.cat([args.cos(), args.sin()], -1)
    return F.pad(emb, (0, dim - 2 * half))


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _transformer(cfg: AutoencoderConfig, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.num_heads, cfg.dim_feedforward, cfg.dropout,
                                       activation=_gelu_tanh, batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(cfg.d_model), enable_nested_tensor=False)


def _mlp3(d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, d, bias=False), nn.SiLU(), nn.Linear(d, d))


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg
        self.atom_embed = nn.Embedding(cfg.num_atom_types, cfg.d_model)
        self.pos_embed = _mlp3(cfg.d_model)
        self.frac_embed = _mlp3(cfg.d_model)
        self.transformer = _transformer(cfg, cfg.encoder_layers)
        self.quant_conv = nn.Linear(cfg.d_model, 2 * cfg.latent_dim)

    def forward(self, atom_types, pos_nm, frac, mask):
        """[B, N] types, [B, N, 3] positions (nm) and fractional coordinates, [B, N] mask → mean, logvar [B, N, L]."""
        idx = torch.arange(atom_types.shape[1], device=atom_types.device).expand_as(atom_types)
        x = self.atom_embed(atom_types) + self.pos_embed(pos_nm) + self.frac_embed(frac) + sinusoid(idx, self.cfg.d_model)
        x = self.transformer(x, src_key_padding_mask=~mask)
        mean, logvar = self.quant_conv(x).chunk(2, dim=-1)
        return mean, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg
        self.post_quant_conv = nn.Linear(cfg.latent_dim, cfg.d_model)
        self.transformer = _transformer(cfg, cfg.decoder_layers)
        self.atom_types_head = nn.Linear(cfg.d_model, cfg.num_atom_types)
        self.pos_head = nn.Linear(cfg.d_model, 3)
        self.frac_head = nn.Linear(cfg.d_model, 3)
        self.lattice_head = nn.Linear(cfg.d_model, 6)

    def forward(self, z, mask):
        """Latents [B, N, L] → dict of type logits [B, N, T], pos (nm) and frac [B, N, 3], lattice [B, 6]."""
        idx = torch.arange(z.shape[1], device=z.device).expand(z.shape[:2])
        x = self.post_quant_conv(z) + sinusoid(idx, self.cfg.d_model)
        x = self.transformer(x, src_key_padding_mask=~mask)
        m = mask[..., None].to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
        return {"atom_types": self.atom_types_head(x), "pos": self.pos_head(x), "frac_coords": self.frac_head(x),
                "lattice": self.lattice_head(pooled)}


class AllAtomAutoencoder(nn.Module):
    """Variational autoencoder over atom tokens (ADiT's VAE)."""

    config_class = AutoencoderConfig
    spec = FamilySpec(
        kind="autoencoder",
        adapters=r"^decoder\.(atom_types_head|pos_head|frac_head|lattice_head)\.",
        lora_targets=r"transformer\.layers\.\d+\.(linear1|linear2|self_attn\.out_proj)$",
        lr_groups={"embedding_recovery": r"^(encoder\.(atom_embed|pos_embed|frac_embed)|decoder\.\w+_head)\."},
        no_weight_decay=r"^(decoder\.pos_head|encoder\.(atom_embed|frac_embed\.\d+|pos_embed\.\d+))\.weight$",
    )

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def encode(self, atom_types, pos_nm, frac, mask):
        return self.encoder(atom_types, pos_nm, frac, mask)

    def decode(self, z, mask):
        return self.decoder(z, mask)

    def forward(self, atom_types, pos_nm, frac, mask, sample: bool = True):
        mean, logvar = self.encode(atom_types, pos_nm, frac, mask)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample else mean
        out = self.decode(z, mask)
        out.update(mean=mean, logvar=logvar, latent=z)
        return out
