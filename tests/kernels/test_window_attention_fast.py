"""Window attention fast paths (compiled on CPU; FlexAttention on CUDA) against the SDPA reference."""

import pytest
import torch

from sciformer import kernels
from sciformer.kernels import window_attention as wa
from sciformer.nn.window_attention import attention_mask


def _inputs(device, dtype, seed, b=2, nw=4, heads=3, win=4, d=16, shifted=True):
    """Random q, k, v, logit scale and position bias; the shift mask of a 2×2-window grid (nW = 4)."""
    g = torch.Generator().manual_seed(seed)
    n = win * win
    q, k, v = (torch.randn(b, nw, heads, n, d, generator=g, dtype=dtype).to(device).requires_grad_()
               for _ in range(3))
    scale = (torch.rand(heads, 1, 1, generator=g, dtype=dtype) * 9 + 1).to(device).requires_grad_()
    bias = (16 * torch.rand(heads, n, n, generator=g, dtype=dtype)).to(device).requires_grad_()
    side = 2 * win - 1  # 7×7 tokens: padded to 8×8 (padded keys masked) and shifted by win // 2
    mask = attention_mask(side, side, win, win, win // 2 if shifted else 0, win // 2 if shifted else 0,
                          torch.device(device))
    return (q, k, v, scale, bias), mask


def _value_and_grads(fn, leaves, mask, seed):
    y = fn(*leaves, mask)
    cot = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype).to(y.device)
    return y, torch.autograd.grad(y, leaves, cot)


def _check(fn, device, dtype, tol, shifted, seed=0):
    leaves, mask = _inputs(device, dtype, seed, shifted=shifted)
    assert (mask is not None) and bool((mask < 0).any())  # padding (and shift) regions are exercised
    y_ref, g_ref = _value_and_grads(wa.reference, leaves, mask, seed + 1)
    y_fast, g_fast = _value_and_grads(fn, leaves, mask, seed + 1)
    torch.testing.assert_close(y_fast, y_ref, rtol=tol, atol=tol)
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_compiled_matches_reference_cpu(dtype, tol):
    _check(wa._compiled("reference"), "cpu", dtype, tol, shifted=True)


def test_dispatch_uses_reference_unless_compile_mode(monkeypatch):
    leaves, mask = _inputs("cpu", torch.float32, 3)
    calls = []
    monkeypatch.setattr(wa, "_compiled", lambda name: lambda *a: calls.append(name) or wa.reference(*a))
    with kernels.use("auto"):
        ref = wa.cosine_window_attention(*leaves, mask)
    assert calls == []
    with kernels.use("compile"):
        out = wa.cosine_window_attention(*leaves, mask)
    assert calls == ["reference"]  # no FlexAttention on CPU
    torch.testing.assert_close(out, ref)
    assert not wa.flex_available(torch.device("cpu"), 16)


def test_flex_only_for_heads_it_can_compile():
    """Inductor's FlexAttention refused 8-channel heads on an H200 (torch 2.11): those take the compiled
    reference; scOT's 16-channel heads take FlexAttention."""
    cuda = torch.device("cuda")  # a device object only: no GPU needed
    assert not wa.flex_available(cuda, 8)
    assert wa.flex_available(cuda, 16)


@pytest.mark.gpu
@pytest.mark.parametrize("shifted", [False, True])
def test_flex_matches_reference_cuda(shifted):
    _check(wa._compiled("flex"), "cuda", torch.float32, 1e-4, shifted)


def test_window_attention_module_routes_through_the_kernel(monkeypatch):
    """``sciformer.nn.window_attention.WindowAttention`` calls the dispatching entry point of this module."""
    from sciformer.nn.window_attention import WindowAttention

    calls = []
    monkeypatch.setattr(wa, "_compiled", lambda name: lambda *a: calls.append(name) or wa.reference(*a))
    torch.manual_seed(0)
    attn = WindowAttention(dim=12, heads=3)
    x = torch.randn(2, 4, 16, 12)  # [B, nW, N = 4×4, C]
    mask = attention_mask(7, 7, 4, 4, 2, 2, torch.device("cpu"))
    with kernels.use("reference"):
        ref = attn(x, 4, 4, mask)
    with kernels.use("compile"):
        out = attn(x, 4, 4, mask)
    assert calls == ["reference"]
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_fused_training_path_equals_the_reference(dtype, tol):
    """``attention_from_qkv`` (q, k normalised together, hand-written backward, one gradient buffer) against the
    reference on the split projection: output and gradients of qkv, the logit scale and the additive table; an
    all-zero token (zero padding) is included: its key is exactly 0 and gets the reference's gradient."""
    g = torch.Generator().manual_seed(3)
    b, nw, heads, win, d = 2, 4, 3, 4, 8
    n, c = win * win, heads * d
    qkv = torch.randn(b, nw, n, 3 * c, generator=g, dtype=dtype)
    qkv[1, 2, 5, c:2 * c] = 0.0  # a zero key row
    qkv.requires_grad_()
    scale = (torch.rand(heads, 1, 1, generator=g, dtype=dtype) * 9 + 1).requires_grad_()
    bias = (16 * torch.rand(heads, n, n, generator=g, dtype=dtype)).requires_grad_()
    mask = attention_mask(2 * win - 1, 2 * win - 1, win, win, win // 2, win // 2, torch.device("cpu")).to(dtype)
    cot = torch.randn(b, nw, heads, n, d, generator=g, dtype=dtype)

    def ref(qkv, scale, bias):
        q, k, v = (u.transpose(2, 3) for u in qkv.view(b, nw, n, 3, heads, d).unbind(3))
        return wa.reference(q, k, v, scale, bias, mask)

    def fused(qkv, scale, bias):
        s2 = torch.stack((scale.detach()[..., 0], torch.ones(heads, 1, dtype=dtype)))
        return wa.attention_from_qkv(qkv, heads, scale, s2, s2.pow(-2), bias + mask[:, None])

    y_ref, y = ref(qkv, scale, bias), fused(qkv, scale, bias)
    torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol)
    g_ref = torch.autograd.grad(y_ref, (qkv, scale, bias), cot)
    g_fused = torch.autograd.grad(y, (qkv, scale, bias), cot)
    for a, e in zip(g_fused, g_ref):
        torch.testing.assert_close(a, e, rtol=tol, atol=tol * max(1.0, e.abs().max().item()))


def test_fused_training_path_under_bf16_autocast():
    """Under CPU bf16 autocast the fused path runs (bf16 products) and stays close to the float32 result."""
    g = torch.Generator().manual_seed(4)
    heads, n, d = 2, 16, 8
    qkv = torch.randn(2, 1, n, 3 * heads * d, generator=g, requires_grad=True)
    scale = torch.full((heads, 1, 1), 5.0, requires_grad=True)
    add = torch.randn(1, heads, n, n, generator=g, requires_grad=True)
    s2 = torch.stack((scale.detach()[..., 0], torch.ones(heads, 1)))
    y32 = wa.attention_from_qkv(qkv, heads, scale, s2, s2.pow(-2), add)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = wa.attention_from_qkv(qkv.bfloat16(), heads, scale, s2, s2.pow(-2), add)
    y16.float().sum().backward()
    assert y16.dtype == torch.bfloat16 and qkv.grad is not None and scale.grad is not None
    torch.testing.assert_close(y16.float(), y32, rtol=5e-2, atol=5e-2)
