"""scOT: the multiscale SwinV2 U-Net operator transformer of Poseidon (Herde et al., arXiv 2405.19101).

Our own implementation of the published design (camlab-ethz/poseidon ``scOT/model.py``; facts in
shared/anchors/poseidon.md §1). Every norm is a time-conditioned LayerNorm (γ(t), β(t) affine in the lead time).

    x [B, C_in, H, W] ─Conv(4×4, stride 4)→ Norm ─► tokens [B, h, w, E]          (input zero-padded to ×4)
    encoder level i (dims E·2^i):  s_i = Blocks_i(z_i);   z_{i+1} = Merge_i(s_i + z_i)      (stage residual)
    skips: k_i = ConvNeXt^{n_i}(s_i)   (n = skip_blocks; the deepest level is the identity)
    decoder, deepest first:         d = Blocks(k_{L−1});  d = Unmerge(d);  d = Blocks(d + k_i) ...
    recovery: ConvTranspose(4×4, stride 4) → crop to H×W → Conv 5×5 (no bias) ─► [B, C_out, H, W]

Blocks are SwinV2 layers (``sciformer.nn.window_attention``): in the encoder odd blocks shift, in the decoder
the blocks run in the mirrored order (so the first one shifts when the depth is even), as upstream.

Beyond Poseidon: any H×W ≥ one patch (rectangular, odd, other resolutions) runs natively — windows shrink to the
token grid per axis, tokens are padded to window multiples with padded keys masked, merges pad odd sizes and
unmerges crop back; no Fourier resampling. ``t=None`` is a steady problem (t = 1). ``gradient_checkpointing``
recomputes each stage in the backward pass. In kernel mode ``compile`` (``sciformer.kernels``) each stage is
``torch.compile``d whole (static shapes). At the training resolution (128², 4→4) the function is exactly
upstream's; ``sciformer convert poseidon`` maps released checkpoints onto this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sciformer.errors import DataError
from sciformer.kernels.dispatch import compiled_enabled, require_finite
from sciformer.kernels.linear import Linear  # nn.Linear through oneDNN on CPU float32 (same state dict)
from sciformer.models.registry import register
from sciformer.models.spec import ChannelTensors, FamilySpec
from sciformer.nn.conditional_norm import (
    TimeConditionedLayerNorm,
    assign_slots,
    modulations,
    plain_parameters,
)
from sciformer.nn.window_attention import (
    SwinV2Block,
    attention_mask,
    attention_tables,
    training_tables,
    use_training_tables,
    window_geometry,
)


@dataclass
class ScOTConfig:
    in_channels: int = 4
    out_channels: int = 4
    image_size: int | Sequence[int] = 128     # nominal (training) grid; other grids run natively
    patch_size: int = 4
    embed_dim: int = 48
    depths: Sequence[int] = (4, 4, 4, 4)
    num_heads: Sequence[int] = (3, 6, 12, 24)
    skip_blocks: Sequence[int] = (2, 2, 2, 0)  # ConvNeXt blocks on each level's skip (0: identity)
    window_size: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.0
    layer_norm_eps: float = 1e-5
    time_conditioning: bool = True
    residual: bool = False                     # Poseidon's learn_residual: out += x[:, :out_channels]
    gradient_checkpointing: bool = False       # recompute each stage in the backward pass (B/L)
    initializer_range: float = 0.02


# ---- blocks ----------------------------------------------------------------------------------------------
class PatchEmbedding(nn.Module):
    """Non-overlapping patches -> tokens: Conv(p×p, stride p) then a time-conditioned norm."""

    def __init__(self, cfg: ScOTConfig):
        super().__init__()
        self.patch = cfg.patch_size
        self.proj = nn.Conv2d(cfg.in_channels, cfg.embed_dim, cfg.patch_size, cfg.patch_size)
        self.norm = TimeConditionedLayerNorm(cfg.embed_dim, cfg.time_conditioning, cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        p, (h, w) = self.patch, x.shape[-2:]
        if h % p or w % p:
            x = F.pad(x, (0, -w % p, 0, -h % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1), t)  # [B, h, w, E]


class PatchMerging(nn.Module):
    """2×2 neighbours concatenated (order (0,0), (1,0), (0,1), (1,1)) -> Linear(4C, 2C) -> norm; odd sizes pad."""

    def __init__(self, dim: int, cfg: ScOTConfig):
        super().__init__()
        self.reduction = Linear(4 * dim, 2 * dim, bias=False)
        self.norm = TimeConditionedLayerNorm(2 * dim, cfg.time_conditioning, cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        b, h, w, c = x.shape
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
            h, w = h + h % 2, w + w % 2
        # [B, h/2, 2(row), w/2, 2(col), C] -> [B, h/2, w/2, 2(col), 2(row), C]: the column offset varies slowest
        x = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, h // 2, w // 2, 4 * c)
        return self.norm(self.reduction(x), t)


class PatchUnmerging(nn.Module):
    """Linear(C, 2C) -> pixel shuffle to 2h×2w×C/2 -> crop -> norm -> Linear(C/2, C/2)."""

    def __init__(self, dim: int, cfg: ScOTConfig):
        super().__init__()
        self.upsample = Linear(dim, 2 * dim, bias=False)
        self.norm = TimeConditionedLayerNorm(dim // 2, cfg.time_conditioning, cfg.layer_norm_eps)
        self.mixup = Linear(dim // 2, dim // 2, bias=False)

    def forward(self, x: torch.Tensor, size: tuple[int, int], t: torch.Tensor | None) -> torch.Tensor:
        b, h, w, c = x.shape
        x = self.upsample(x).view(b, h, w, 2, 2, c // 2).transpose(2, 3).reshape(b, 2 * h, 2 * w, c // 2)
        if (2 * h, 2 * w) != size:
            x = x[:, :size[0], :size[1]]
        return self.mixup(self.norm(x, t))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block on a skip: depthwise 7×7 -> norm -> Linear(C, 4C) -> GELU -> Linear(4C, C) -> γ -> + x."""

    def __init__(self, dim: int, cfg: ScOTConfig, layer_scale: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = TimeConditionedLayerNorm(dim, cfg.time_conditioning, cfg.layer_norm_eps)
        self.pwconv1 = Linear(dim, 4 * dim)
        self.pwconv2 = Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        y = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # channels-last in and out
        return x + self.gamma * self.pwconv2(F.gelu(self.pwconv1(self.norm(y, t))))


class Stage(nn.Module):
    """SwinV2 blocks of one level; ``shift_odd`` selects which blocks shift (encoder: odd; decoder: mirrored)."""

    def __init__(self, dim: int, depth: int, heads: int, cfg: ScOTConfig, drop_path: Sequence[float],
                 mirrored: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinV2Block(dim, heads, cfg.window_size, shifted=((depth - 1 - j) if mirrored else j) % 2 == 1,
                        mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, drop_path=drop_path[j],
                        eps=cfg.layer_norm_eps, time_conditioning=cfg.time_conditioning)
            for j in range(depth)
        )

    def forward(self, x: torch.Tensor, t, tables: Sequence | None = None) -> torch.Tensor:
        """``tables``: the blocks' attention tables when the model computed them for the whole level."""
        if tables is None:
            tables = level_tables([self], x.shape[1], x.shape[2], x.device, self.training)[0]
        for block, tab in zip(self.blocks, tables):
            x = block(x, t, tab)
        return x


def level_tables(stages: Sequence[Stage], h: int, w: int, device: torch.device, training: bool) -> list[list]:
    """The attention tables of the stages of one level (same grid, window and heads: the encoder's and the
    decoder's), their position-bias MLPs batched into one; per stage a list with one entry per block."""
    blocks = [b for st in stages for b in st.blocks]
    wh, ww, _, _ = window_geometry(h, w, blocks[0].window, False)
    layers = [b.attn for b in blocks]
    if use_training_tables(training) and plain_parameters(layers):  # eager training: the fused path's tables
        masks = [attention_mask(h, w, *window_geometry(h, w, b.window, b.shifted), device) for b in blocks]
        flat = training_tables(layers, wh, ww, masks, device)
    else:
        flat = attention_tables(layers, wh, ww, device)
    out, i = [], 0
    for st in stages:
        out.append(flat[i:i + len(st.blocks)])
        i += len(st.blocks)
    return out



class EncoderStage(Stage):
    def __init__(self, dim, depth, heads, cfg, drop_path, downsample: bool):
        super().__init__(dim, depth, heads, cfg, drop_path, mirrored=False)
        self.downsample = PatchMerging(dim, cfg) if downsample else None

    def forward(self, x, t, tables=None):
        """-> (output passed down, stage output kept as the skip)."""
        s = super().forward(x, t, tables)
        return (self.downsample(s + x, t) if self.downsample is not None else s), s


class DecoderStage(Stage):
    def __init__(self, dim, depth, heads, cfg, drop_path, upsample: bool):
        super().__init__(dim, depth, heads, cfg, drop_path, mirrored=True)
        self.upsample = PatchUnmerging(dim, cfg) if upsample else None

    def forward(self, x, t, size=None, tables=None):
        x = super().forward(x, t, tables)
        return self.upsample(x, size, t) if self.upsample is not None else x


class PatchRecovery(nn.Module):
    """Tokens -> field: ConvTranspose(p×p, stride p) -> crop to H×W -> Conv 5×5 'mixup' (no bias)."""

    def __init__(self, cfg: ScOTConfig):
        super().__init__()
        self.projection = nn.ConvTranspose2d(cfg.embed_dim, cfg.out_channels, cfg.patch_size, cfg.patch_size)
        self.mixup = nn.Conv2d(cfg.out_channels, cfg.out_channels, 5, padding=2, bias=False)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        y = self.projection(x.permute(0, 3, 1, 2))
        return self.mixup(y[..., :size[0], :size[1]])


# ---- model -----------------------------------------------------------------------------------------------
class ScOT(nn.Module):
    """scOT operator: ``model(x [B, C_in, H, W], t [B] or None) -> [B, C_out, H, W]``."""

    config_class = ScOTConfig
    spec = FamilySpec(
        kind="operator",
        sized_by_data=("in_channels", "out_channels"),
        channels=(ChannelTensors("inputs", r"^embeddings\.proj\.weight$", dims=(1,)),        # [E, C_in, p, p]
                  ChannelTensors("outputs", r"^patch_recovery\.projection\.weight$", dims=(1,)),  # [E, C_out, p, p]
                  ChannelTensors("outputs", r"^patch_recovery\.projection\.bias$"),
                  ChannelTensors("outputs", r"^patch_recovery\.mixup\.weight$", dims=(0, 1))),  # [C_out, C_out, 5, 5]
        adapters=r"^(embeddings|patch_recovery)\.",
        # Poseidon gives every time-conditioned norm parameter outside the embedding the time-embedding LR
        time_conditioning=r"norm[^.]*\.(weight|bias)(_t)?$",
        lora_targets=r"(attn\.qkv|attn\.proj|fc1|fc2)$",
        lr_groups={"embedding_recovery": r"^(embeddings|patch_recovery)\.",
                   "time_embedding": r"norm[^.]*\.(weight|bias)(_t)?$"},
        no_weight_decay=r"^embeddings\.proj\.weight$|attn\.(cpb_mlp\.\d+\.weight|logit_scale)$",
        blocks=r"(encoder|decoder)\.\d+|skips\.\d+\.\d+",  # stages (their blocks share one bias-table MLP call)
    )

    def __init__(self, config: ScOTConfig):
        super().__init__()
        cfg = self.config = config
        levels = len(cfg.depths)
        if not (len(cfg.num_heads) == len(cfg.skip_blocks) == levels):
            raise ValueError(f"depths, num_heads and skip_blocks need one entry per level ({levels}); "
                             f"got {list(cfg.num_heads)} and {list(cfg.skip_blocks)}")
        dims = [cfg.embed_dim * 2**i for i in range(levels)]
        for d, h in zip(dims, cfg.num_heads):
            if d % h:
                raise ValueError(f"level width {d} is not a multiple of its {h} heads")
        n_rates = 2 * sum(cfg.depths)  # linspace(0, rate, n) in plain Python (works on the meta device)
        rates = [cfg.drop_path_rate * i / max(n_rates - 1, 1) for i in range(n_rates)]
        enc_rates, dec_rates = rates[: len(rates) // 2], rates[len(rates) // 2:]
        starts = [sum(cfg.depths[:i]) for i in range(levels + 1)]

        self.embeddings = PatchEmbedding(cfg)
        self.encoder = nn.ModuleList(
            EncoderStage(dims[i], cfg.depths[i], cfg.num_heads[i], cfg, enc_rates[starts[i]:starts[i + 1]],
                         downsample=i < levels - 1)
            for i in range(levels)
        )
        self.skips = nn.ModuleList(
            nn.ModuleList(ConvNeXtBlock(dims[i], cfg) for _ in range(cfg.skip_blocks[i])) for i in range(levels)
        )
        # decoder[k] is level L−1−k (deepest first); its drop-path rates mirror upstream's
        total = starts[-1]
        self.decoder = nn.ModuleList(
            DecoderStage(dims[i], cfg.depths[i], cfg.num_heads[i], cfg,
                         dec_rates[total - starts[i + 1]:total - starts[i]], upsample=i > 0)
            for i in reversed(range(levels))
        )
        self.patch_recovery = PatchRecovery(cfg)
        self.apply(self._init_weights)
        # the time-conditioned norms, numbered: their γ(t), β(t) are computed together once per forward
        self._norms = tuple(m for m in self.modules() if isinstance(m, TimeConditionedLayerNorm)
                            and m.time_conditioning)
        assign_slots(self._norms)

    def _init_weights(self, m: nn.Module) -> None:
        """Upstream's init (HF Swinv2PreTrainedModel): N(0, 0.02) weights, zero biases; our norms start at γ=1."""
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, std=self.config.initializer_range)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # ---- input checks (Python ints only; no host sync unless SCIFORMER_CHECK_FINITE=1) -------------------
    def _check(self, x: torch.Tensor, t: torch.Tensor | None) -> None:
        cfg = self.config
        if x.ndim != 4:
            raise DataError(f"scOT expects x [B, C, H, W]; got shape {tuple(x.shape)}")
        if x.shape[1] != cfg.in_channels:
            raise DataError(
                f"scOT has {cfg.in_channels} input channels, the data has {x.shape[1]}; fine-tune with channel "
                f"adaptation (OperatorTask(pretrained=..., data_spec=...)) or build the model with "
                f"in_channels={x.shape[1]}")
        if min(x.shape[2:]) < cfg.patch_size:
            raise DataError(f"grid {tuple(x.shape[2:])} is smaller than one {cfg.patch_size}×{cfg.patch_size} "
                            f"patch; scOT needs at least {cfg.patch_size} points per axis")
        if t is not None and (t.ndim != 1 or t.shape[0] != x.shape[0]):
            raise DataError(f"lead time t must have shape [B]=[{x.shape[0]}], got {tuple(t.shape)}")
        # NaN/Inf: only as an opt-in debug check (a host sync each); the data side checks what it reads
        require_finite(x, "scOT input contains NaN or infinite values")
        require_finite(t, "lead time t contains NaN or infinite values")

    def _run(self, module: nn.Module, *args):
        if compiled_enabled() and module._compiled_call_impl is None:
            # kernel mode ``compile``: each stage through Inductor as a whole, static shapes (in place: the
            # state dict is unchanged). A new shape recompiles; the first step takes minutes on CPU.
            module.compile(dynamic=False, fullgraph=True)
        if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C_in, H, W], t [B] lead time or None (steady: t = 1) -> [B, C_out, H, W]."""
        self._check(x, t)
        size = tuple(x.shape[-2:])
        fused = use_training_tables(self.training)
        if self._norms and fused:  # eager training: every norm's γ(t), β(t) in one product
            t = modulations(self._norms, t) or t
        z = self.embeddings(x, t)  # [B, h, w, E]
        levels = len(self.encoder)
        tables: list = [(None, None)] * levels  # per level: (encoder's, decoder's)
        if fused:  # eager training: both stages of a level share one batched table computation
            h, w = z.shape[1:3]
            for i in range(levels):
                pair = [self.encoder[i], self.decoder[levels - 1 - i]]
                if plain_parameters(pair):  # (FSDP2-sharded stages compute their own, parameters gathered)
                    tables[i] = level_tables(pair, h, w, x.device, True)
                h, w = h if i == levels - 1 else -(-h // 2), w if i == levels - 1 else -(-w // 2)
        skips = []
        for i, stage in enumerate(self.encoder):
            z, s = self._run(stage, z, t, tables[i][0])
            skips.append(s)
        for i, blocks in enumerate(self.skips):
            for block in blocks:
                skips[i] = block(skips[i], t)
        d = skips[-1]
        for k, stage in enumerate(self.decoder):
            level = levels - 1 - k
            if k:
                d = d + skips[level]
            up = tuple(skips[level - 1].shape[1:3]) if level else None
            d = self._run(stage, d, t, up, tables[level][1])
        out = self.patch_recovery(d, size)
        if self.config.residual:
            out = out + x[:, : self.config.out_channels]
        return out


# ---- named sizes (Poseidon's MODEL_MAP, scOT/train.py; 4→4 channels at 128² by default) -------------------
_POSEIDON = dict(patch_size=4, window_size=16, num_heads=(3, 6, 12, 24), skip_blocks=(2, 2, 2, 0), mlp_ratio=4.0)
register("scot-t", ScOT, embed_dim=48, depths=(4, 4, 4, 4), **_POSEIDON)
register("scot-s", ScOT, embed_dim=48, depths=(8, 8, 8, 8), **_POSEIDON)
register("scot-b", ScOT, embed_dim=96, depths=(8, 8, 8, 8), **_POSEIDON)
register("scot-l", ScOT, embed_dim=192, depths=(8, 8, 8, 8), **_POSEIDON)
# Small size for CPU runs and tests (not a Poseidon size).
register("scot-tiny", ScOT, embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8), skip_blocks=(1, 1, 0),
         window_size=8, patch_size=4, image_size=64)
