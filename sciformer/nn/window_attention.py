"""SwinV2 window attention on 2-D token grids of any shape (scOT's attention).

Scaled-cosine attention inside (shifted) windows with a continuous relative position bias
(Liu et al., "Swin Transformer V2", arXiv 2111.09883; as in Hugging Face's ``Swinv2SelfAttention``):

    scores = cos(q_i, k_j) · exp(min(logit_scale, log 100)) + 16·σ(MLP(ĉ(i − j))) + mask_ij
    ĉ(Δ) = sign(c) · log2(1 + |c|) / 3,   c = 8 · Δ / (window − 1)   (per axis; Δ = 0 when window = 1)

The MLP is ``Linear(2, 512) → ReLU → Linear(512, heads, bias=False)``. Everything is computed by one call to
``F.scaled_dot_product_attention``: the logit scale is folded into the normalised queries and the position
bias plus the masks into one additive mask (``sciformer.kernels.window_attention``: the reference and its
fused fast paths).

Grids that do not fit the window (DECISIONS "scOT on other grids"): per axis the window is
``min(window, tokens)``; tokens are zero-padded at the end to a multiple of the window, padded tokens are
masked out as keys and cropped after attention; a block shifts (by window // 2, cyclically, as SwinV2) only
along axes with more tokens than the window. Masks and relative-coordinate tables depend only on the grid
geometry and are cached per (grid, window, shift, device).

Shapes are channels-last: ``x [B, H, W, C] -> [B, H, W, C]``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sciformer.kernels import window_attention as fused  # dispatch: the reference or a fused fast path
from sciformer.kernels.dispatch import mode
from sciformer.kernels.linear import Linear, linear  # nn.Linear / F.linear, through oneDNN on CPU float32
from sciformer.nn.conditional_norm import TimeConditionedLayerNorm

# HF's Swinv2SelfAttention adds its −100 shift mask twice, so upstream scOT effectively uses −200; we match it.
SHIFT_MASK = -200.0
# Padded keys: large enough that exp() underflows to exactly 0 in float32/bfloat16, finite so that a query
# whose window holds no real key (a padded query, cropped afterwards) gives no NaN in the backward pass.
PAD_MASK = -1.0e4
LOGIT_SCALE_MAX = math.log(100.0)


# ---- geometry (cached; no parameters) ------------------------------------------------------------------
def window_geometry(h: int, w: int, window: int, shifted: bool) -> tuple[int, int, int, int]:
    """Per-axis window (min(window, tokens)) and shift (window // 2 if shifted and the axis exceeds it)."""
    wh, ww = min(window, h), min(window, w)
    sh = wh // 2 if shifted and h > wh else 0
    sw = ww // 2 if shifted and w > ww else 0
    return wh, ww, sh, sw


@functools.lru_cache(maxsize=64)
def relative_coordinates(wh: int, ww: int, device: torch.device, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Log-spaced relative coordinates ``[2wh−1, 2ww−1, 2]`` of the offsets (Δh, Δw), Δ from −(w−1) to w−1
    (computed in float64; cached per dtype so that no cast runs per call)."""
    axes = []
    for n in (wh, ww):
        d = torch.arange(-(n - 1), n, dtype=torch.float64)
        axes.append(d * (8.0 / (n - 1)) if n > 1 else d)
    c = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    return (torch.sign(c) * torch.log2(c.abs() + 1.0) / 3.0).to(device, dtype)


def _region_ids(n_pad: int, win: int, shift: int) -> torch.Tensor:
    """SwinV2's shift regions along one axis of the rolled grid: [0, n−win), [n−win, n−shift), [n−shift, n)."""
    ids = torch.zeros(n_pad, dtype=torch.int64)
    if shift > 0:
        ids[n_pad - win:n_pad - shift] = 1
        ids[n_pad - shift:] = 2
    return ids


@functools.lru_cache(maxsize=64)
def attention_mask(h: int, w: int, wh: int, ww: int, sh: int, sw: int,
                   device: torch.device) -> torch.Tensor | None:
    """Additive mask ``[nW, N, N]`` for the shifted-window regions and padded keys, or None if neither applies."""
    hp, wp = -(-h // wh) * wh, -(-w // ww) * ww
    if not (sh or sw or hp > h or wp > w):
        return None
    valid = torch.zeros(hp, wp, dtype=torch.bool)
    valid[:h, :w] = True
    region = _region_ids(hp, wh, sh)[:, None] * 3 + _region_ids(wp, ww, sw)[None, :]
    valid = torch.roll(valid, shifts=(-sh, -sw), dims=(0, 1))  # the rolled grid's region ids are fixed
    region_w = region.view(hp // wh, wh, wp // ww, ww).transpose(1, 2).reshape(-1, wh * ww)  # [nW, N]
    valid_w = valid.view(hp // wh, wh, wp // ww, ww).transpose(1, 2).reshape(-1, wh * ww)
    mask = torch.zeros(region_w.shape[0], wh * ww, wh * ww)
    mask.masked_fill_(region_w[:, :, None] != region_w[:, None, :], SHIFT_MASK)
    mask.masked_fill_(~valid_w[:, None, :], PAD_MASK)
    return mask.to(device)


# ---- modules -------------------------------------------------------------------------------------------
class WindowAttention(nn.Module):
    """Multi-head scaled-cosine attention over windows with a continuous relative position bias (SwinV2).

    Queries and values have biases, keys none (as SwinV2); q, k, v come from one fused projection.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, cpb_hidden: int = 512):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.dim, self.heads = dim, heads
        self.qkv = Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.logit_scale = nn.Parameter(torch.full((heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, cpb_hidden), nn.ReLU(), nn.Linear(cpb_hidden, heads, bias=False))
        self.proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor, wh: int, ww: int, mask: torch.Tensor | None,
                tables: tuple[torch.Tensor, torch.Tensor] | TrainingTables | None = None) -> torch.Tensor:
        """x: [B, nW, N, C] window tokens -> [B, nW, N, C]; ``tables``: this layer's entry of
        ``attention_tables`` (or of ``training_tables``) when a stage computed them for all its layers at once."""
        b, nw, n, c = x.shape
        if isinstance(tables, TrainingTables):  # eager training: fused normalisation and attention
            qkv = linear(x, self.qkv.weight, tables.qkv_bias)
            out = fused.attention_from_qkv(qkv, self.heads, tables.scale, tables.s2, tables.inv_s2sq, tables.add)
            return self.proj(out.transpose(2, 3).reshape(b, nw, n, c))
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        qkv = linear(x, self.qkv.weight, bias).view(b, nw, n, 3, self.heads, c // self.heads)
        # unbind before transposing: its backward stacks the gradients straight into qkv's layout (no copy)
        q, k, v = (u.transpose(2, 3) for u in qkv.unbind(3))  # each [B, nW, heads, N, d]
        scale, position_bias = tables if tables is not None else attention_tables([self], wh, ww, x.device)[0]
        out = fused.cosine_window_attention(q, k, v, scale, position_bias, mask)
        return self.proj(out.transpose(2, 3).reshape(b, nw, n, c))


def _stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0][None] if len(tensors) == 1 else torch.stack(tensors)  # one layer: a view, no copy


def attention_tables(layers: Sequence[WindowAttention], wh: int, ww: int,
                     device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer: ``(scale [heads, 1, 1], bias [heads, N, N])``, see ``_stacked_tables``."""
    scale, bias = _stacked_tables(layers, wh, ww, device)
    return list(zip(scale.unbind(0), bias.unbind(0)))


def _stacked_tables(layers: Sequence[WindowAttention], wh: int, ww: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer: the logit scale ``exp(min(logit_scale, log 100))`` [heads, 1, 1] and the position bias
    16·σ(MLP(relative coordinates)) per (query, key) pair [heads, N, N].

    Layers of one stage (same heads, same window) share the coordinate table, so their MLPs run as one batched
    MLP on stacked weights: the same function, with the kernel launches of one layer instead of one per layer
    (the training step is launch-bound on GPUs). The pair (i, j) reads the table at offset i − j; ``unfold``
    builds that block-Toeplitz matrix as a view (its backward is a strided sum, cheaper than scattering a
    gather's gradient).
    """
    table = relative_coordinates(wh, ww, device, layers[0].cpb_mlp[0].weight.dtype).flatten(0, 1)  # [T, 2]
    w1 = _stacked([a.cpb_mlp[0].weight for a in layers])  # [L, hidden, 2]
    b1 = _stacked([a.cpb_mlp[0].bias for a in layers])
    w2 = _stacked([a.cpb_mlp[2].weight for a in layers])  # [L, heads, hidden]
    # transposed products ([L, features, T]) so that the weight gradients come out in the weights' layout
    hidden = torch.relu(torch.baddbmm(b1[:, :, None], w1, table.T.expand(len(layers), -1, -1)))
    t = 16 * torch.sigmoid(torch.bmm(w2, hidden))  # [L, heads, T]
    heads = t.shape[1]
    t = t.view(len(layers), heads, 2 * wh - 1, 2 * ww - 1)
    # u[l, h, a, b, c, d] = t[l, h, a + c, b + d]; with c = wh−1−j_h, d = ww−1−j_w this is t at offset i − j
    u = t.unfold(2, wh, 1).unfold(3, ww, 1)  # [L, heads, wh, ww, wh, ww]
    bias = u.flip(4, 5).reshape(len(layers), heads, wh * ww, wh * ww)
    scale = torch.clamp(_stacked([a.logit_scale for a in layers]), max=LOGIT_SCALE_MAX).exp()
    return scale, bias


class TrainingTables(NamedTuple):
    """One layer's share of the per-stage tables of the eager training path (``training_tables``)."""

    qkv_bias: torch.Tensor | None  # [3C]: (q_bias, 0, v_bias)
    scale: torch.Tensor            # [heads, 1, 1]: exp(min(logit_scale, log 100))
    s2: torch.Tensor               # [2, heads, 1]: (scale, 1), no gradient
    inv_s2sq: torch.Tensor         # [2, heads, 1]: 1 / s2², no gradient
    add: torch.Tensor              # [nW or 1, heads, N, N]: position bias + shift/padding mask


def use_training_tables(training: bool) -> bool:
    """The fused eager training path: a module in training mode with gradients wanted, not traced (compile,
    export) and kernel mode ``auto`` (``reference`` keeps the previous path, the "before" of a comparison;
    ``compile`` compiles the plain one). Evaluation and export take the SDPA path."""
    return (training and torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and not torch.compiler.is_exporting() and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()
            and mode() == "auto")


@functools.lru_cache(maxsize=64)
def _constant(value: float, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A cached constant tensor (no fill kernel per step)."""
    return torch.full(shape, value, dtype=dtype, device=device)


@functools.lru_cache(maxsize=64)
def stacked_masks(masks: tuple[torch.Tensor | None, ...]) -> torch.Tensor | None:
    """The layers' masks stacked [L, nW, N, N] (a layer without one gets zeros), or None if no layer has one."""
    first = next((m for m in masks if m is not None), None)
    if first is None:
        return None
    return torch.stack([torch.zeros_like(first) if m is None else m for m in masks])


def training_tables(layers: Sequence[WindowAttention], wh: int, ww: int, masks: Sequence[torch.Tensor | None],
                    device: torch.device) -> list[TrainingTables]:
    """``attention_tables`` for the eager training path, per stage: also the layers' (q, 0, v) biases in one
    concatenation, the scales as (s; 1) pairs, and bias + mask per distinct mask in one addition each.

    Why: each of these is then a few kernels per stage instead of a few per layer (the GPU step is launch-bound).
    """
    scale, bias = _stacked_tables(layers, wh, ww, device)  # [L, heads, 1, 1], [L, heads, N, N]
    n_layers = len(layers)
    s = scale.detach()[..., 0]
    s2 = torch.stack((s, _constant(1.0, tuple(s.shape), s.dtype, s.device)), 1)  # [L, 2, heads, 1]
    inv_s2sq = s2.pow(-2)
    qkv_bias = [None] * n_layers
    if layers[0].q_bias is not None:
        q = layers[0].q_bias
        zeros = _constant(0.0, tuple(q.shape), q.dtype, q.device)
        qkv_bias = torch.cat([u for a in layers for u in (a.q_bias, zeros, a.v_bias)]).view(n_layers, -1).unbind(0)
    stacked = stacked_masks(tuple(masks))  # cached per grid: one addition for all layers
    add = bias[:, None] if stacked is None else bias[:, None] + stacked[:, :, None].to(bias.dtype)
    return [TrainingTables(*u) for u in zip(qkv_bias, scale.unbind(0), s2.unbind(0), inv_s2sq.unbind(0),
                                            add.unbind(0))]


def window_partition(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """[B, H, W, C] -> [B, nW, wh·ww, C] (row-major windows; a view when there is one window)."""
    b, h, w, c = x.shape
    if h == wh and w == ww:
        return x.reshape(b, 1, h * w, c)
    return x.view(b, h // wh, wh, w // ww, ww, c).transpose(2, 3).reshape(b, -1, wh * ww, c)


def window_merge(x: torch.Tensor, h: int, w: int, wh: int, ww: int) -> torch.Tensor:
    """Inverse of ``window_partition``: [B, nW, wh·ww, C] -> [B, H, W, C]."""
    b, _, _, c = x.shape
    if h == wh and w == ww:
        return x.reshape(b, h, w, c)
    return x.view(b, h // wh, w // ww, wh, ww, c).transpose(2, 3).reshape(b, h, w, c)


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch per sample with probability ``p`` during training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class SwinV2Block(nn.Module):
    """SwinV2 layer with res-post-norm and time-conditioned norms (scOT):

        h = x + DropPath(Norm1(WindowAttention(x), t));   out = h + DropPath(Norm2(MLP(h), t))
    """

    def __init__(self, dim: int, heads: int, window: int, shifted: bool, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_path: float = 0.0, eps: float = 1e-5, time_conditioning: bool = True):
        super().__init__()
        self.window, self.shifted = window, shifted
        self.attn = WindowAttention(dim, heads, qkv_bias)
        self.norm1 = TimeConditionedLayerNorm(dim, time_conditioning, eps)
        hidden = int(mlp_ratio * dim)
        self.fc1 = Linear(dim, hidden)
        self.fc2 = Linear(hidden, dim)
        self.norm2 = TimeConditionedLayerNorm(dim, time_conditioning, eps)
        self.drop_path = DropPath(drop_path)

    def attention(self, x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The window-attention branch on [B, H, W, C] (pad, shift, partition, attend, merge, unshift, crop)."""
        _, h, w, _ = x.shape
        wh, ww, sh, sw = window_geometry(h, w, self.window, self.shifted)
        hp, wp = -(-h // wh) * wh, -(-w // ww) * ww
        if hp > h or wp > w:
            x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
        if sh or sw:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        mask = attention_mask(h, w, wh, ww, sh, sw, x.device)
        y = window_merge(self.attn(window_partition(x, wh, ww), wh, ww, mask, tables), hp, wp, wh, ww)
        if sh or sw:
            y = torch.roll(y, shifts=(sh, sw), dims=(1, 2))
        if hp > h or wp > w:
            y = y[:, :h, :w]
        return y

    def forward(self, x: torch.Tensor, t: torch.Tensor | None,
                tables: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``tables``: this block's entry of ``attention_tables`` (computed here when None)."""
        x = x + self.drop_path(self.norm1(self.attention(x, tables), t))
        return x + self.drop_path(self.norm2(self.fc2(F.gelu(self.fc1(x))), t))
