"""Fused time-conditioned LayerNorm (compiled path) against its eager reference, forward and backward."""

import pytest
import torch
import torch.nn.functional as F

from sciformer import kernels
from sciformer.kernels import layer_norm
from sciformer.nn.conditional_norm import TimeConditionedLayerNorm


def _inputs(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=dtype) * 3 + 1).requires_grad_()
    params = [torch.randn(shape[-1], generator=g, dtype=dtype).requires_grad_() for _ in range(4)]
    t = torch.rand(shape[0], generator=g, dtype=dtype)
    return x, params, t


def _value_and_grads(fn, x, params, t, seed):
    y = fn(x, t, *params, 1e-5)
    cot = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    grads = torch.autograd.grad(y, [x, *params], cot)
    return y, grads


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("steady", [False, True])
def test_compiled_matches_reference(dtype, tol, steady):
    x, params, t = _inputs((3, 5, 7, 24), dtype, seed=int(steady))
    t = None if steady else t
    y_ref, g_ref = _value_and_grads(layer_norm.reference, x, params, t, seed=2)
    y_fast, g_fast = _value_and_grads(layer_norm._compiled(), x, params, t, seed=2)
    torch.testing.assert_close(y_fast, y_ref, rtol=tol, atol=tol)
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_reference_is_the_poseidon_formula():
    x, (w, b, wt, bt), t = _inputs((2, 4, 6), torch.float64, seed=3)
    tb = t.view(-1, 1, 1)
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    expected = (w + wt * tb) * (x - mu) / torch.sqrt(var + 1e-5) + (b + bt * tb)
    torch.testing.assert_close(layer_norm.reference(x, t, w, b, wt, bt, 1e-5), expected, rtol=1e-12, atol=1e-12)


def test_module_dispatches_on_mode(monkeypatch):
    """In mode ``compile`` the module calls the compiled function, otherwise the reference."""
    calls = []
    monkeypatch.setattr(layer_norm, "_compiled", lambda: lambda *a: calls.append("fast") or layer_norm.reference(*a))
    norm = TimeConditionedLayerNorm(8)
    x, t = torch.randn(2, 3, 8), torch.rand(2)
    with kernels.use("reference"):
        ref = norm(x, t)
    with kernels.use("auto"):
        norm(x, t)
    assert calls == []
    with kernels.use("compile"):
        fast = norm(x, t)
    assert calls == ["fast"]
    torch.testing.assert_close(fast, ref)


@pytest.mark.parametrize("shape", [(3, 8), (3, 5, 8), (3, 4, 6, 8)])
def test_hand_written_backward_equals_autograd_of_the_formula(shape):
    """The reference's custom backward gives autograd's gradients of the composed formula (x, t and all four
    parameters), float64; also for a channels-last view of a channels-first tensor (as after a conv)."""
    x, params, t = _inputs(shape, torch.float64, seed=4)
    t.requires_grad_()

    def formula(x, t, w, b, wt, bt, eps):
        tb = t.reshape(-1, *([1] * (x.ndim - 1)))
        return torch.addcmul(b + bt * tb, F.layer_norm(x, x.shape[-1:], eps=eps), w + wt * tb)

    y_ref, g_ref = _value_and_grads(formula, x, params, t, seed=5)
    y, g = _value_and_grads(layer_norm.reference, x, params, t, seed=5)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    (gt,) = torch.autograd.grad(layer_norm.reference(x, t, *params, 1e-5).sum(), t)
    (gt_ref,) = torch.autograd.grad(formula(x, t, *params, 1e-5).sum(), t)
    torch.testing.assert_close(gt, gt_ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *a: layer_norm.reference(*a, 1e-5), (x, t, *params))
    xc = torch.randn(2, 8, 3, 5, dtype=torch.float64).permute(0, 2, 3, 1).requires_grad_()
    _, g_view = _value_and_grads(layer_norm.reference, xc, params, t[:2].detach(), seed=6)
    _, g_view_ref = _value_and_grads(formula, xc, params, t[:2].detach(), seed=6)
    for a, b in zip(g_view, g_view_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_autocast_computes_in_float32():
    """Under autocast (bf16 activations, float32 parameters) the norm runs in float32, t unrounded."""
    x, params, t = _inputs((2, 5, 8), torch.float32, seed=7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer_norm.reference(x.detach().bfloat16(), t, *params, 1e-5)
    assert y.dtype == torch.float32
    expected = layer_norm.reference(x.detach().bfloat16().float(), t, *params, 1e-5)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)


@pytest.mark.parametrize("batch_gb", [3, 1])
def test_precomputed_gamma_beta_backward_equals_autograd(batch_gb):
    """``layer_norm_gamma_beta`` (γ, β per sample given as gb [B, 2, C], or [1, 2, C] shared): value and
    gradients of x and gb equal autograd of ``LN(x)·γ + β`` in float64."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(3, 4, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    gb = torch.randn(batch_gb, 2, 8, generator=g, dtype=torch.float64, requires_grad=True)
    cot = torch.randn(3, 4, 5, 8, generator=g, dtype=torch.float64)
    shape = (batch_gb, 1, 1, 8)
    ref = F.layer_norm(x, (8,), eps=1e-5) * gb[:, 0].reshape(shape) + gb[:, 1].reshape(shape)
    y = layer_norm.layer_norm_gamma_beta(x, gb, 1e-5)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    for a, e in zip(torch.autograd.grad(y, (x, gb), cot), torch.autograd.grad(ref, (x, gb), cot)):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # inference: the plain formula
        torch.testing.assert_close(layer_norm.layer_norm_gamma_beta(x, gb, 1e-5), ref, rtol=1e-12, atol=1e-12)
