"""Time-conditioned LayerNorm + modulation: ``(x − μ)/sqrt(σ² + eps) · (w + w_t·t) + (b + b_t·t)``.

Reference: ``F.layer_norm`` then one ``addcmul`` with the per-sample γ(t), β(t) — two passes over ``x``
forward, more backward, and a normalised copy of ``x`` kept for autograd. Fast path (mode ``compile``):
the same formula written with ``var_mean`` and compiled by Inductor, which fuses statistics, normalisation
and modulation into one read and one write of ``x`` forward (and one fused kernel backward); on CUDA
Inductor emits a Triton kernel, on CPU vectorised C++.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from sciformer.kernels.dispatch import compiled_enabled


def _modulation(x: torch.Tensor, t: torch.Tensor | None, weight, bias, weight_t, bias_t):
    """γ(t), β(t) broadcastable to x: [dim] for t=None (t = 1), else [B, 1, ..., 1, dim]."""
    if t is None:
        return weight + weight_t, bias + bias_t
    t = t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return weight + weight_t * t, bias + bias_t * t


def reference(x: torch.Tensor, t: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor,
              weight_t: torch.Tensor, bias_t: torch.Tensor, eps: float) -> torch.Tensor:
    """x [B, ..., dim], t [B] or None -> same shape as x (eager PyTorch)."""
    gamma, beta = _modulation(x, t, weight, bias, weight_t, bias_t)
    if t is None:
        return F.layer_norm(x, (x.shape[-1],), gamma, beta, eps)
    return torch.addcmul(beta, F.layer_norm(x, (x.shape[-1],), eps=eps), gamma)


def _fusable(x, t, weight, bias, weight_t, bias_t, eps: float):
    gamma, beta = _modulation(x, t, weight, bias, weight_t, bias_t)
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    return (x - mean) * torch.rsqrt(var + eps) * gamma + beta


@functools.cache
def _compiled():
    return torch.compile(_fusable, fullgraph=True)


def time_conditioned_layer_norm(x: torch.Tensor, t: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor,
                                weight_t: torch.Tensor, bias_t: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Dispatching entry point (see ``sciformer.kernels.dispatch``); same contract as ``reference``."""
    if compiled_enabled():
        return _compiled()(x, t, weight, bias, weight_t, bias_t, eps)
    return reference(x, t, weight, bias, weight_t, bias_t, eps)
