"""oneDNN linear (forward and both gradients vs float64) and the fast dropout (bit-identical to F.dropout)."""

import pytest
import torch
import torch.nn.functional as F

from sciformer import kernels
from sciformer.kernels.dropout import dropout
from sciformer.kernels.linear import Linear, _OneDNNLinear, linear

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_linear_forward_and_gradients_match_float64(bias):
    torch.manual_seed(0)
    x = torch.randn(4, 96, 11).transpose(1, 2)  # [4, 11, 96], not contiguous (as the inverted embedding's input)
    w, b = torch.randn(32, 96) / 10, torch.randn(32) if bias else None
    g = torch.randn(4, 11, 32)
    leaves = [t.clone().requires_grad_() for t in (x, w, *([b] if bias else []))]
    y = _OneDNNLinear.apply(leaves[0], leaves[1], leaves[2] if bias else None)  # the fast path itself
    y.backward(g)
    ref = [t.double().requires_grad_() for t in (x, w, *([b] if bias else []))]
    y64 = F.linear(*ref[:2], ref[2] if bias else None)
    y64.backward(g.double())
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    for got, want in zip(leaves, ref):
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=1e-5, atol=1e-4)


@needs_onednn
def test_linear_sees_in_place_weight_updates_and_skips_unneeded_gradients():
    # an optimiser updates the weight in place every step: no stale packed copy may be used
    torch.manual_seed(1)
    layer, x = Linear(16, 8), torch.randn(5, 16)
    first = layer(x)
    with torch.no_grad():
        layer.weight.mul_(2)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(first, layer(x))
    layer.weight.requires_grad_(False)
    xg = x.clone().requires_grad_()
    layer(xg).sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is not None and xg.grad.shape == x.shape


def test_linear_falls_back_in_reference_mode_float64_and_autocast():
    x, w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True), torch.randn(2, 4, dtype=torch.float64)
    assert linear(x, w).grad_fn.name() != "_OneDNNLinearBackward"
    x32, w32 = x.detach().float().requires_grad_(), w.float()
    with kernels.use("reference"):
        assert linear(x32, w32).grad_fn.name() != "_OneDNNLinearBackward"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(x32, w32).dtype == torch.bfloat16  # autocast's F.linear, not a float32 product


def test_linear_falls_back_where_the_internal_op_is_missing(monkeypatch):
    """The oneDNN op is internal to PyTorch: a build without it (or with another signature) uses F.linear."""
    from sciformer.kernels import linear as lin

    def missing(*a):
        raise RuntimeError("No such operator mkldnn::_linear_pointwise")

    monkeypatch.setattr(lin, "_mm", missing)
    lin._onednn_works.cache_clear()
    try:
        x, w = torch.randn(3, 4, requires_grad=True), torch.randn(2, 4)
        y = linear(x, w)
        assert y.grad_fn.name() != "_OneDNNLinearBackward"
        torch.testing.assert_close(y, F.linear(x, w))
    finally:
        lin._onednn_works.cache_clear()


@needs_onednn
def test_onednn_self_check_leaves_the_global_rng_alone():
    """The one-time check runs inside the first training step: a draw from the global RNG there shifted every
    dropout mask of a resumed run (the ForecastTask kill-and-resume case, tests/test_resume_tasks.py)."""
    from sciformer.kernels import linear as lin

    lin._onednn_works.cache_clear()
    try:
        state = torch.get_rng_state()
        assert lin._onednn_works()
        assert torch.equal(torch.get_rng_state(), state)
    finally:
        lin._onednn_works.cache_clear()


@needs_onednn
@pytest.mark.parametrize("avx512", [True, False])
def test_linear_takes_onednn_only_on_avx512_cpus(monkeypatch, avx512):
    """oneDNN wins only with AVX-512; an AVX2-only CPU gets F.linear (MKL), whose weight gradient is faster there."""
    from sciformer.kernels import linear as lin

    monkeypatch.setattr(lin, "_avx512", lambda: avx512)
    x, w = torch.randn(3, 4, requires_grad=True), torch.randn(2, 4)
    assert (linear(x, w).grad_fn.name() == "_OneDNNLinearBackward") == avx512
    torch.testing.assert_close(linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dropout_is_bit_identical_to_f_dropout(dtype):
    x = torch.randn(4, 11, 64, dtype=dtype, requires_grad=True)
    g = torch.randn_like(x)
    torch.manual_seed(3)
    want = F.dropout(x, 0.1, True)
    (want_grad,) = torch.autograd.grad(want, x, g)
    state = torch.get_rng_state()
    torch.manual_seed(3)
    got = dropout(x, 0.1, True)
    (got_grad,) = torch.autograd.grad(got, x, g)
    assert torch.equal(got, want) and torch.equal(got_grad, want_grad)
    assert torch.equal(torch.get_rng_state(), state)  # the generator advanced exactly as F.dropout's
    assert 0.05 < (got == 0).double().mean() < 0.15


def test_dropout_is_identity_in_eval_and_at_zero_rate():
    x = torch.randn(100, 100)
    assert dropout(x, 0.3, False) is x and dropout(x, 0.0, True) is x
