"""Time-conditioned LayerNorm + modulation: ``(x − μ)/sqrt(σ² + eps) · (w + w_t·t) + (b + b_t·t)``.

Reference: LayerNorm without affine then one ``addcmul`` with the per-sample γ(t), β(t), as a custom autograd
Function whose backward launches 7 kernels instead of autograd's ~13 (the step is launch-bound on GPUs) — two
passes over ``x`` forward, more backward, and a normalised copy of ``x`` kept for the backward. Fast path (mode ``compile``):
the same formula written with ``var_mean`` and compiled by Inductor, which fuses statistics, normalisation
and modulation into one read and one write of ``x`` forward (and one fused kernel backward); on CUDA
Inductor emits a Triton kernel, on CPU vectorised C++.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from sciformer.kernels.dispatch import compiled_enabled


def _compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The wider of x's and the parameters' dtypes (bf16 activations under autocast: float32, t unrounded)."""
    return weight.dtype if weight.dtype.itemsize > x.dtype.itemsize else x.dtype


def _modulation(x: torch.Tensor, t: torch.Tensor | None, weight, bias, weight_t, bias_t):
    """γ(t), β(t) broadcastable to x: [dim] for t=None (t = 1), else [B, 1, ..., 1, dim]."""
    if t is None:
        return weight + weight_t, bias + bias_t
    t = t.to(_compute_dtype(x, weight)).reshape(-1, *([1] * (x.ndim - 1)))
    return weight + weight_t * t, bias + bias_t * t


class _ModulatedLayerNorm(torch.autograd.Function):
    """``LN(x)·γ(t) + β(t)`` for x [B, ..., C] (at least 3-D), t [B], with a hand-written backward.

    Why: autograd of the composed formula launches ~13 kernels per norm backward (a reduction per broadcast
    operand and per ``·t`` product); here the per-sample γ/β gradients are two token reductions and the four
    parameter gradients one column sum and one matrix-vector product (7 kernels). Same function and gradients.
    """

    @staticmethod
    def forward(ctx, x, t, weight, bias, weight_t, bias_t, eps):
        n, mean, rstd = torch.native_layer_norm(x, x.shape[-1:], None, None, eps)
        gamma = torch.addcmul(weight, t[:, None], weight_t)  # [B, C]
        beta = torch.addcmul(bias, t[:, None], bias_t)
        ctx.save_for_backward(x, t, n, mean, rstd, gamma, weight_t, bias_t)
        per_sample = (x.shape[0],) + (1,) * (x.ndim - 2) + x.shape[-1:]
        return torch.addcmul(beta.view(per_sample), n, gamma.view(per_sample))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, t, n, mean, rstd, gamma, weight_t, bias_t = ctx.saved_tensors
        b, c = gamma.shape
        tokens = tuple(range(1, x.ndim - 1))
        gx = gt = None
        if ctx.needs_input_grad[0]:
            per_sample = (b,) + (1,) * len(tokens) + (c,)
            gx = torch.ops.aten.native_layer_norm_backward(g * gamma.view(per_sample), x, x.shape[-1:], mean,
                                                           rstd, None, None, (True, False, False))[0]
        gmod = g.new_empty(b, 2, c)  # per-sample gradients of γ and β, side by side
        torch.sum(g * n, tokens, out=gmod[:, 0])
        torch.sum(g, tokens, out=gmod[:, 1])
        gmod = gmod.view(b, 2 * c)
        gp, gpt = gmod.sum(0), t @ gmod  # [dγ/dw | dβ/db], [dγ/dw_t | dβ/db_t]
        if ctx.needs_input_grad[1]:
            gt = gmod[:, :c] @ weight_t + gmod[:, c:] @ bias_t
        return gx, gt, gp[:c], gp[c:], gpt[:c], gpt[c:], None


class _LayerNormGammaBeta(torch.autograd.Function):
    """``LN(x)·γ + β`` with per-sample ``γ, β`` given as one tensor ``gb [B, 2, C]`` (γ; β), already computed
    for every norm of a network by one product (``sciformer.nn.conditional_norm.modulations``).

    2 kernels forward (the norm, one ``addcmul``), 5 backward (``g·γ``, the norm's backward, ``g·n`` and two token
    sums written side by side into the gradient of ``gb``); the parameters' gradients are then one product for
    all norms together instead of two reductions per norm.
    """

    @staticmethod
    def forward(ctx, x, gb, eps):
        n, mean, rstd = torch.native_layer_norm(x, x.shape[-1:], None, None, eps)
        per_sample = (gb.shape[0],) + (1,) * (x.ndim - 2) + x.shape[-1:]
        gamma, beta = gb[:, 0].view(per_sample), gb[:, 1].view(per_sample)
        ctx.save_for_backward(x, n, mean, rstd, gamma)
        ctx.broadcast = gb.shape[0] != x.shape[0]
        return torch.addcmul(beta, n, gamma)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, n, mean, rstd, gamma = ctx.saved_tensors
        gx = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.native_layer_norm_backward(g * gamma, x, x.shape[-1:], mean, rstd, None, None,
                                                           (True, False, False))[0]
        tokens = tuple(range(1, x.ndim - 1))
        if ctx.broadcast:  # one γ, β for the whole batch (t = None)
            tokens = (0,) + tokens
        ggb = g.new_empty(gamma.shape[0], 2, g.shape[-1])
        gg, gbeta = (ggb[0, 0], ggb[0, 1]) if ctx.broadcast else (ggb[:, 0], ggb[:, 1])
        torch.sum(g * n, tokens, out=gg)
        torch.sum(g, tokens, out=gbeta)
        return gx, ggb, None


def layer_norm_gamma_beta(x: torch.Tensor, gb: torch.Tensor, eps: float) -> torch.Tensor:
    """``LN(x)·γ + β`` for x [B, ..., C] and gb [B or 1, 2, C] (γ; β per sample), computed in ``_compute_dtype``.

    Training in eager mode: the hand-written backward above; inference and compiled code: the plain formula (what
    Inductor fuses and what ONNX export records)."""
    dtype = _compute_dtype(x, gb)
    x = x.to(dtype)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[:, None]
    if torch.compiler.is_compiling() or not (torch.is_grad_enabled() and (x.requires_grad or gb.requires_grad)):
        shape = (gb.shape[0],) + (1,) * (x.ndim - 2) + x.shape[-1:]
        y = torch.addcmul(gb[:, 1].reshape(shape), F.layer_norm(x, x.shape[-1:], None, None, eps),
                          gb[:, 0].reshape(shape))
    else:
        y = _LayerNormGammaBeta.apply(x, gb, eps)
    return y[:, 0] if squeeze else y


def reference(x: torch.Tensor, t: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor,
              weight_t: torch.Tensor, bias_t: torch.Tensor, eps: float) -> torch.Tensor:
    """x [B, ..., dim], t [B] or None -> same shape as x (eager PyTorch).

    Computed in ``_compute_dtype`` (under autocast: float32, as CUDA autocast's ``F.layer_norm``).
    """
    if t is None:  # γ, β are plain vectors: F.layer_norm's own affine (its backward reduces them)
        return F.layer_norm(x, (x.shape[-1],), weight + weight_t, bias + bias_t, eps)
    if torch.compiler.is_compiling():  # traced by an outer compile: Inductor fuses the plain formula's backward
        return _fusable(x, t, weight, bias, weight_t, bias_t, eps)
    dtype = _compute_dtype(x, weight)
    x3 = x.to(dtype)
    if x.ndim == 2:  # the backward reduces over axes 1..ndim−2: give a token axis
        x3 = x3[:, None]
    y = _ModulatedLayerNorm.apply(x3, t.to(dtype), weight, bias, weight_t, bias_t, eps)
    return y if x.ndim > 2 else y[:, 0]


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
