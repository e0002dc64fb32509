"""Scaled-cosine window attention with an additive bias (scOT / SwinV2): the kernel boundary of
``sciformer.nn.window_attention``.

Reference: ``sciformer.nn.window_attention.cosine_window_attention`` — normalise q, k, fold the logit scale
into q and position bias + shift/padding masks into one additive mask, one SDPA call (masks and coordinate
tables are cached per grid by that module; the bias depends on trained weights and is recomputed per call).
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


def reference(q, k, v, scale, bias, mask):
    """q, k, v [B, nW, heads, N, d]; scale [heads, 1, 1]; bias [heads, N, N]; mask [nW, N, N] or None."""
    from sciformer.nn.window_attention import cosine_window_attention

    return cosine_window_attention(q, k, v, scale, bias, mask)


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
