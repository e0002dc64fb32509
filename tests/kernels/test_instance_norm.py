"""Instance norm fast paths (two-pass eager, compiled) against the var_mean reference, forward and backward."""

import pytest
import torch

from sciformer import kernels
from sciformer.kernels import instance_norm as inorm


def _check(fn, shape, dtype, tol, seed=0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=dtype) * 2 + offset).requires_grad_()
    y_ref = inorm.reference(x)
    y = fn(x)
    torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol)
    cot = torch.randn(shape, generator=g, dtype=dtype)
    (g_ref,) = torch.autograd.grad(y_ref, x, cot)
    (g_fast,) = torch.autograd.grad(y, x, cot)
    torch.testing.assert_close(g_fast, g_ref, rtol=tol, atol=tol)
    return y


@pytest.mark.parametrize("shape", [(3, 6, 5, 4), (2, 4, 3, 5, 6)])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_two_pass_matches_reference(shape, dtype, tol):
    y = _check(inorm.two_pass, shape, dtype, tol, offset=50.0)  # a large mean must not cost accuracy
    flat = y.detach().reshape(shape[0], -1, shape[-1])
    torch.testing.assert_close(flat.mean(1), torch.zeros(shape[0], shape[-1], dtype=dtype), atol=tol, rtol=0)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_compiled_matches_reference(dtype, tol):
    _check(inorm._compiled(), (2, 6, 5, 8), dtype, tol, seed=1)


def test_dispatch_by_mode(monkeypatch):
    x = torch.randn(2, 4, 4, 3)
    seen = []
    monkeypatch.setattr(inorm, "two_pass", lambda x, eps: seen.append("two_pass") or inorm.reference(x, eps))
    monkeypatch.setattr(inorm, "_compiled", lambda: lambda x, eps: seen.append("compiled") or inorm.reference(x, eps))
    for m in ("reference", "auto", "compile"):
        with kernels.use(m):
            inorm.instance_norm(x)
    assert seen == ["two_pass", "compiled"]
