"""Scaled-cosine window attention with an additive bias (scOT / SwinV2): the kernel boundary of
``sciformer.nn.window_attention``, which calls ``cosine_window_attention`` here (never the other way round).

Reference (``reference``): normalise q, k (one autograd Function), fold the logit scale into q and position
bias + shift/padding masks into one additive mask, one SDPA call (masks and coordinate tables are cached per
grid by ``sciformer.nn.window_attention``; the bias depends on trained weights and is recomputed per call).
Fast paths (mode ``compile``):

- CUDA with FlexAttention available and heads of ≥ 16 channels: windows folded into the head axis, the additive mask read in a
  ``score_mod``, compiled (FlexAttention has no CPU backward, and its CPU forward did not lower this
  ``score_mod`` in torch 2.13, so it is CUDA-only);
- otherwise: the reference compiled by Inductor (fuses the normalisations, scaling, mask addition and
  softmax around the matrix products).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from sciformer.kernels.dispatch import compiled_enabled

NORM_EPS = 1e-12  # F.normalize's: x / max(|x|, eps)


class _ScaledUnit(torch.autograd.Function):
    """``y = x · s / max(|x|, 1e-12)`` over the last axis (F.normalize times a per-head scale, or s = 1).

    Why a custom Function: autograd of the composed formula launches ~14 kernels backward per tensor (norm,
    clamp and division each differentiated apart); the closed form ``f·(g − y (g·y)/s²)``, f = s/max(|x|, eps),
    needs 5 (the clamped rows get ``f·g``, as autograd). The output is written contiguous in the [.., N, d]
    order, so the score product needs no copy of q or k.
    """

    @staticmethod
    def forward(ctx, x, scale):
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        f = norm.clamp_min(NORM_EPS)
        f = scale / f if scale is not None else f.reciprocal_()
        y = torch.mul(x, f, out=x.new_empty(x.shape))
        ctx.save_for_backward(y, f, norm, scale)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        y, f, norm, scale = ctx.saved_tensors
        dot = (g * y).sum(-1, keepdim=True)  # s·(g·x̂)
        gs = None
        if scale is not None:
            if ctx.needs_input_grad[1]:
                gs = dot.sum_to_size(scale.shape) / scale
            dot = dot / (scale * scale)
        dot.masked_fill_(norm < NORM_EPS, 0.0)  # clamped rows: the factor is a constant
        return torch.addcmul(g, y, dot, value=-1.0).mul_(f), gs


class _QKVHeads(torch.autograd.Function):
    """The fused projection's output, token-major ``qkv [B, nW, N, 3, H, d]``, to one head-major tensor
    ``[3, B, nW, H, N, d]`` holding ``F.normalize(q)·s``, ``F.normalize(k)`` and ``v``.

    Why: q and k are normalised together (one norm, one clamp, one division, one product that also transposes),
    v is transposed by one copy; backward is the closed form of ``_ScaledUnit`` for q and k at once, written
    straight into the token-major gradient of ``qkv``. ``s2 [2, H, 1]`` is (s; 1), ``inv_s2sq`` its 1/s².
    """

    @staticmethod
    def forward(ctx, qkv, scale, s2, inv_s2sq):
        b, nw, n, _, h, d = qkv.shape
        qk = qkv[:, :, :, :2]
        norm = torch.linalg.vector_norm(qk, dim=-1, keepdim=True)  # [B, nW, N, 2, H, 1]
        f = s2 / norm.clamp_min(NORM_EPS)
        out = qkv.new_empty(3, b, nw, h, n, d)
        torch.mul(qk, f, out=out[:2].permute(1, 2, 4, 0, 3, 5))
        out[2].transpose(2, 3).copy_(qkv[:, :, :, 2])
        ctx.save_for_backward(out, f, s2, inv_s2sq)
        ctx.scale_shape = scale.shape
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        out, f, s2, inv_s2sq = ctx.saved_tensors
        y = out[:2].permute(1, 2, 4, 0, 3, 5)  # [B, nW, N, 2, H, d] views
        gy = g[:2].permute(1, 2, 4, 0, 3, 5)
        # (g·ŷ)/s². Rows clamped in the forward (|x| < 1e-12) should get c = 0; an exactly zero row (zero-padded
        # tokens) has ŷ = 0 and gets the right gradient f·g anyway, so only 0 < |x| < 1e-12 differs (not masked:
        # two kernels per layer for rows that do not occur in float32 activations; ``_ScaledUnit`` masks them)
        c = (gy * y).sum(-1, keepdim=True).mul_(inv_s2sq)
        gs = None
        if ctx.needs_input_grad[1]:  # d/ds of s·x̂: Σ (g·ŷ)/s = Σ c·s over the q rows
            gs = c[:, :, :, 0].sum((0, 1, 2), dtype=s2.dtype).mul_(s2[0]).view(ctx.scale_shape)
        b, nw, n, _, h, d = y.shape
        gqkv = g.new_empty(b, nw, n, 3, h, d)
        torch.addcmul(gy, y, c, value=-1.0, out=gqkv[:, :, :, :2]).mul_(f)
        gqkv[:, :, :, 2].copy_(g[2].transpose(2, 3))
        return gqkv, gs, None, None


class _WindowSoftmaxAttention(torch.autograd.Function):
    """``softmax(q kᵀ + add) v`` per window and head for the head-major ``qkvh [3, B, nW, H, N, d]`` of
    ``_QKVHeads`` and the additive table ``add [nW or 1, H, N, N]`` (position bias plus masks, learned).

    CPU training path: SDPA's CPU kernels have no backward for a learned ``attn_mask``; 4 kernels forward, 6
    backward, all gradients of q, k, v written into one buffer (no stack)."""

    @staticmethod
    def forward(ctx, qkvh, add):
        q, k, v = qkvh.unbind(0)
        s = torch.matmul(q, k.transpose(-1, -2)).add_(add)
        p = torch.softmax(s, dim=-1).to(v.dtype)  # (under autocast softmax runs in float32)
        ctx.save_for_backward(qkvh, p)
        ctx.add_shape = add.shape
        return torch.matmul(p, v)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, go):
        qkvh, p = ctx.saved_tensors
        q, k, v = qkvh.unbind(0)
        n, d = q.shape[-2:]
        go = go.contiguous().view(-1, n, d)
        p3 = p.view(-1, n, n)
        g = torch.empty_like(qkvh)
        gp = torch.bmm(go, v.reshape(-1, n, d).transpose(1, 2))
        torch.bmm(p3.transpose(1, 2), go, out=g[2].view(-1, n, d))
        gs = torch._softmax_backward_data(gp, p3, -1, p3.dtype)
        torch.bmm(gs, k.reshape(-1, n, d), out=g[0].view(-1, n, d))
        torch.bmm(gs.transpose(1, 2), q.reshape(-1, n, d), out=g[1].view(-1, n, d))
        gadd = None
        if ctx.needs_input_grad[1]:
            gs = gs.view(p.shape)
            gadd = gs.sum(0) if ctx.add_shape[0] > 1 else gs.sum((0, 1))[None]
        return g, gadd


def attention_from_qkv(qkv: torch.Tensor, heads: int, scale: torch.Tensor, s2: torch.Tensor,
                       inv_s2sq: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    """Training path of scOT's window attention: ``qkv [B, nW, N, 3C]`` (the fused projection with its biases)
    -> ``[B, nW, heads, N, d]``, the same function as ``reference`` with the logit scale ``scale [heads, 1, 1]``
    (``s2``: (scale; 1) and ``inv_s2sq`` = 1/s2², both without gradient) and ``add = bias + mask``. CUDA: the
    normalisation above, then SDPA (its kernels take a learned mask)."""
    b, nw, n, c3 = qkv.shape
    qkvh = _QKVHeads.apply(qkv.view(b, nw, n, 3, heads, c3 // (3 * heads)), scale, s2, inv_s2sq)
    if qkv.device.type == "cpu":
        return _WindowSoftmaxAttention.apply(qkvh, add)
    q, k, v = qkvh.unbind(0)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=add.to(q.dtype), scale=1.0)


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: torch.Tensor,
              bias: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Scaled-cosine attention with an additive bias, per window (eager PyTorch).

    q, k, v: [B, nW, heads, N, d] (raw projections); scale: [heads, 1, 1] (already clamped and exponentiated);
    bias: [heads, N, N] (position bias); mask: [nW, N, N] additive or None. Returns [B, nW, heads, N, d].
    """
    q = _ScaledUnit.apply(q, scale)  # F.normalize(q)·scale: the logit scale folded into the queries
    k = _ScaledUnit.apply(k, None)
    add = (bias if mask is None else bias + mask[:, None].to(bias.dtype)).to(q.dtype)  # [(nW,) heads, N, N]
    if q.device.type == "cpu" and add.requires_grad and torch.is_grad_enabled():
        # Training on CPU: SDPA's CPU kernels have no backward for a learned attn_mask, and its math fallback
        # adds all-masked-row checks; this is the same function, measured ~25% faster at scOT-T's shapes.
        scores = torch.matmul(q, k.transpose(-1, -2)).add_(add)  # in place: matmul's backward needs q, k only
        return torch.matmul(torch.softmax(scores, dim=-1), v)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=add, scale=1.0)


def _flex(q, k, v, scale, bias, mask):
    from torch.nn.attention.flex_attention import flex_attention

    b, nw, h, n, d = q.shape
    q = F.normalize(q, dim=-1) * scale
    k = F.normalize(k, dim=-1)
    add = bias if mask is None else bias + mask[:, None].to(bias.dtype)
    add = add.expand(nw, h, n, n).reshape(nw * h, n, n).to(q.dtype)  # one [N, N] table per (window, head)

    def score_mod(score, batch, head, i, j):
        return score + add[head, i, j]

    out = flex_attention(q.reshape(b, nw * h, n, d), k.reshape(b, nw * h, n, d), v.reshape(b, nw * h, n, d),
                         score_mod=score_mod, scale=1.0)
    return out.view(b, nw, h, n, d)


FLEX_MIN_HEAD_DIM = 16  # Inductor's FlexAttention kernel refuses smaller heads (torch 2.11 on an H200: "NYI")


def flex_available(device: torch.device, head_dim: int) -> bool:
    """FlexAttention is used only on CUDA (no CPU backward), for heads of at least 16 channels (scOT's are 16+),
    and only where torch ships it."""
    if device.type != "cuda" or head_dim < FLEX_MIN_HEAD_DIM:
        return False
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _compiled(name: str):
    return torch.compile(_flex if name == "flex" else reference, fullgraph=name == "flex")


def cosine_window_attention(q, k, v, scale, bias, mask):
    """Dispatching entry point; same contract and result as ``reference``."""
    if compiled_enabled():
        return _compiled("flex" if flex_available(q.device, q.shape[-1]) else "reference")(q, k, v, scale, bias, mask)
    return reference(q, k, v, scale, bias, mask)
