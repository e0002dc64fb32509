"""Factorized attention: float64 references with materialised kernels, rotary property, modes, axes."""

import math

import pytest
import torch

from sciformer.nn.factorized_attention import (
    AxisKernel,
    AxisPooling,
    FactorizedAttention,
    apply_along_axis,
    quadrature_weights,
    uniform_coordinates,
)
from sciformer.nn.rope import RotaryEmbedding, apply_rotary


def _block(spatial_dims, mode, **kw):
    torch.manual_seed(0)
    blk = FactorizedAttention(dim=12, spatial_dims=spatial_dims, heads=2, dim_head=3, latent_dim=10,
                              kernel_multiplier=2, mode=mode, **kw).double()
    # FactFormer's 0.02 init makes kernels tiny; scale q/k up so the checks are not trivially near zero.
    for k in blk.kernel:
        k.to_q.weight.data.normal_(0, 0.5)
        k.to_k.weight.data.normal_(0, 0.5)
    return blk


# ---- rotary embedding --------------------------------------------------------------------------------
def test_rotary_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    rope = RotaryEmbedding(8, min_freq=1 / 64)
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    p = torch.tensor([0.3, 1.1], dtype=torch.float64)

    def score(shift):
        f = rope(p + shift)
        return (apply_rotary(q, f[0]) * apply_rotary(k, f[1])).sum()

    s0 = score(0.0)
    for shift in (0.05, 0.7, -2.3):
        torch.testing.assert_close(score(shift), s0, rtol=1e-10, atol=1e-10)
    # and it does depend on the relative position
    f = rope(torch.tensor([0.3, 1.6], dtype=torch.float64))
    assert abs(float((apply_rotary(q, f[0]) * apply_rotary(k, f[1])).sum() - s0)) > 1e-3


def test_rotary_matches_explicit_pairwise_rotation():
    torch.manual_seed(1)
    dim, pos = 6, 0.37
    x = torch.randn(dim, dtype=torch.float64)
    out = apply_rotary(x, RotaryEmbedding(dim, min_freq=0.5)(torch.tensor([pos], dtype=torch.float64))[0])
    ref = torch.empty_like(x)
    for j in range(dim // 2):
        theta = pos / 0.5 * 10000 ** (-2 * j / dim)
        a, b = x[j], x[j + dim // 2]
        ref[j] = a * math.cos(theta) - b * math.sin(theta)
        ref[j + dim // 2] = b * math.cos(theta) + a * math.sin(theta)
    torch.testing.assert_close(out, ref)


# ---- kernels -------------------------------------------------------------------------------------------
def _rotate_loop(x, pos, min_freq):
    """Explicit per-pair rotation of x [dk] at coordinate pos (reference for the rotary embedding)."""
    dk = x.shape[0]
    out = torch.empty_like(x)
    for j in range(dk // 2):
        theta = float(pos) / min_freq * 10000 ** (-2 * j / dk)
        a, b = x[j], x[j + dk // 2]
        out[j] = a * math.cos(theta) - b * math.sin(theta)
        out[j + dk // 2] = b * math.cos(theta) + a * math.sin(theta)
    return out


@pytest.mark.parametrize("with_weights", [False, True])
def test_axis_kernel_matches_explicit_loops(with_weights):
    torch.manual_seed(2)
    b, n, latent, heads, dk = 2, 5, 4, 2, 6
    ker = AxisKernel(latent, heads, dk, rope=True, rope_min_freq=1 / 8, scaling=0.7).double()
    u = torch.randn(b, n, latent, dtype=torch.float64)
    coords = torch.sort(torch.rand(n, dtype=torch.float64) * 2 * math.pi).values
    w = quadrature_weights(coords / (2 * math.pi), 1.0) if with_weights else None
    out = ker(u, coords, w)
    ref = torch.zeros(b, heads, n, n, dtype=torch.float64)
    Wq, Wk = ker.to_q.weight, ker.to_k.weight
    for bi in range(b):
        for h in range(heads):
            rows = slice(h * dk, (h + 1) * dk)
            for i in range(n):
                qi = _rotate_loop(Wq[rows] @ u[bi, i], coords[i], 1 / 8)
                for j in range(n):
                    kj = _rotate_loop(Wk[rows] @ u[bi, j], coords[j], 1 / 8)
                    ref[bi, h, i, j] = 0.7 * torch.dot(qi, kj) * (w[j] if w is not None else 1.0)
    torch.testing.assert_close(out, ref.detach())


def test_quadrature_weights():
    torch.testing.assert_close(quadrature_weights(torch.linspace(0, 1, 9)), torch.tensor(
        [0.5] + [1.0] * 7 + [0.5]) * 9 / 8)
    torch.testing.assert_close(quadrature_weights(torch.arange(8.0) / 8, period=1.0), torch.ones(8))
    x = torch.tensor([0.0, 0.1, 0.3, 0.6, 1.0], dtype=torch.float64)
    w = quadrature_weights(x)  # trapezoid: integrates linear functions exactly
    f = 2 * x + 1
    torch.testing.assert_close((w * f).mean() * (x[-1] - x[0]), torch.tensor(2.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="increasing"):
        quadrature_weights(torch.tensor([0.0, 0.5, 0.4]))


# ---- applying kernels: dense float64 references -----------------------------------------------------
def _dense_chained(kernels):
    """Materialise the Kronecker-product kernel [B, h, N, N] of the chained application."""
    if len(kernels) == 2:
        kx, ky = kernels
        full = torch.einsum("bhij,bhlm->bhiljm", kx, ky)
    else:
        kx, ky, kz = kernels
        full = torch.einsum("bhij,bhlm,bhrs->bhilrjms", kx, ky, kz)
    b, h = kx.shape[:2]
    n = math.prod(k.shape[-1] for k in kernels)
    return full.reshape(b, h, n, n)


def _dense_single(kernels, axis):
    """Dense operator of one axis kernel (identity on the other axes)."""
    eyes = [torch.eye(k.shape[-1], dtype=k.dtype).expand_as(k) for k in kernels]
    eyes[axis] = kernels[axis]
    return _dense_chained(eyes)


@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 5)])
def test_chained_equals_dense_kronecker_operator(shape):
    nd = len(shape)
    blk = _block(nd, "chained")
    u = torch.randn(2, *shape, 12, dtype=torch.float64)
    kernels = blk.kernels(u)
    v = torch.randn(2, 2, *shape, 3, dtype=torch.float64)
    out = blk.mix(v, kernels)
    dense = _dense_chained(kernels)  # [B, h, N, N]
    ref = (dense @ v.reshape(2, 2, -1, 3)).reshape(out.shape)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 5)])
def test_parallel_is_concatenation_of_single_axis_operators(shape):
    nd = len(shape)
    blk = _block(nd, "parallel")
    u = torch.randn(2, *shape, 12, dtype=torch.float64)
    kernels = blk.kernels(u)
    v = torch.randn(2, 2, *shape, 3, dtype=torch.float64)
    out = blk.mix(v, kernels)
    assert out.shape == (2, 2, *shape, 3 * nd)
    for a in range(nd):
        ref = (_dense_single(kernels, a) @ v.reshape(2, 2, -1, 3)).reshape(v.shape)
        torch.testing.assert_close(out[..., 3 * a:3 * (a + 1)], ref)


def test_chained_and_parallel_differ_as_documented():
    """Chained = product of axis operators (order-free); parallel = their separate outputs. They agree only
    in the degenerate case where every kernel but one is the identity (then chained == that slice)."""
    torch.manual_seed(3)
    kx, ky = torch.randn(1, 1, 4, 4, dtype=torch.float64), torch.randn(1, 1, 5, 5, dtype=torch.float64)
    v = torch.randn(1, 1, 4, 5, 2, dtype=torch.float64)
    xy = apply_along_axis(ky, apply_along_axis(kx, v, 0), 1)
    yx = apply_along_axis(kx, apply_along_axis(ky, v, 1), 0)
    torch.testing.assert_close(xy, yx)  # axes commute
    chained = FactorizedAttention(4, 2, heads=1, dim_head=2, mode="chained").double()
    parallel = FactorizedAttention(4, 2, heads=1, dim_head=2, mode="parallel").double()
    torch.testing.assert_close(chained.mix(v, [kx, ky]), xy)
    par = parallel.mix(v, [kx, ky])
    assert not torch.allclose(par[..., :2], xy)
    eye = torch.eye(5, dtype=torch.float64)[None, None]
    torch.testing.assert_close(chained.mix(v, [kx, eye]), parallel.mix(v, [kx, eye])[..., :2])


def _reference_forward(blk, u):
    """FactFormer's block in float64 with upstream's operation order: both linears on the full grid before
    averaging, explicit einsums for the kernels' application, instance norm, output MLP."""
    nd = blk.spatial_dims
    b, spatial = u.shape[0], u.shape[1:-1]
    h, d = blk.heads, blk.dim_head
    v = torch.einsum("...c,oc->...o", u, blk.to_v.weight).reshape(b, *spatial, h, d)
    w = torch.einsum("...c,oc->...o", u, blk.to_in.weight)
    kernels = []
    for a in range(nd):
        p = blk.pool[a]
        full = torch.einsum("...c,oc->...o", w, p.proj.weight)  # per-point projection, then average
        others = tuple(1 + o for o in range(nd) if o != a)
        m = full.mean(dim=others)
        m = torch.nn.functional.layer_norm(m, (m.shape[-1],), p.norm.weight, p.norm.bias)
        g = m @ p.fc1.weight.T + p.fc1.bias
        half = g.shape[-1] // 2
        ua = (torch.nn.functional.gelu(g[..., :half]) * g[..., half:]) @ p.fc2.weight.T + p.fc2.bias
        kernels.append(blk.kernel[a](ua, uniform_coordinates(spatial[a], dtype=torch.float64)))
    letters = "ijk"[:nd]
    if blk.mode == "chained":
        y = v
        for a in range(nd):
            src = letters.replace(letters[a], "z")
            y = torch.einsum(f"bh{letters[a]}z,b{src}hc->b{letters}hc", kernels[a], y)
    else:
        parts = []
        for a in range(nd):
            src = letters.replace(letters[a], "z")
            parts.append(torch.einsum(f"bh{letters[a]}z,b{src}hc->b{letters}hc", kernels[a], v))
        y = torch.cat(parts, dim=-1)
    y = y.reshape(b, *spatial, -1)
    dims = tuple(range(1, 1 + nd))
    y = (y - y.mean(dims, keepdim=True)) / torch.sqrt(y.var(dims, keepdim=True, unbiased=False) + 1e-5)
    return torch.nn.functional.gelu(y @ blk.out1.weight.T) @ blk.out2.weight.T


@pytest.mark.parametrize("mode", ["chained", "parallel"])
@pytest.mark.parametrize("shape", [(6, 5), (4, 3, 5)])
def test_block_matches_float64_reference(mode, shape):
    blk = _block(len(shape), mode)
    u = torch.randn(2, *shape, 12, dtype=torch.float64)
    torch.testing.assert_close(blk(u), _reference_forward(blk, u).detach())


@pytest.mark.parametrize("mode", ["chained", "parallel"])
@pytest.mark.parametrize("shape", [(8, 6), (4, 6, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shapes_and_dtypes(mode, shape, dtype):
    torch.manual_seed(0)
    blk = FactorizedAttention(16, len(shape), heads=2, dim_head=4, mode=mode, dim_out=7).to(dtype)
    u = torch.randn(3, *shape, 16, dtype=dtype, requires_grad=True)
    out = blk(u)
    assert out.shape == (3, *shape, 7) and out.dtype == dtype
    out.float().square().mean().backward()
    assert u.grad is not None and torch.isfinite(u.grad.float()).all()


@pytest.mark.parametrize("mode", ["chained", "parallel"])
def test_swapping_axes_with_their_weights_transposes_the_output(mode):
    """Each axis has its own pooling and kernel: transposing the grid and swapping the per-axis modules
    transposes the output exactly; without swapping the modules it does not."""
    blk = _block(2, mode)
    u = torch.randn(2, 6, 6, 12, dtype=torch.float64)
    out = blk(u)
    swapped = _block(2, mode)
    swapped.load_state_dict(blk.state_dict())
    swapped.pool = torch.nn.ModuleList([swapped.pool[1], swapped.pool[0]])
    swapped.kernel = torch.nn.ModuleList([swapped.kernel[1], swapped.kernel[0]])
    ut = u.transpose(1, 2)
    out_t = swapped(ut)
    if mode == "chained":
        torch.testing.assert_close(out_t, out.transpose(1, 2))
    else:  # the parallel concatenation order of the axes changes too: permute out1's input columns
        w = swapped.out1.weight.data.view(-1, 2, 2, 3)  # [out, heads, axes, dim_head]
        swapped.out1.weight.data = w.flip(2).reshape(w.shape[0], -1)
        torch.testing.assert_close(swapped(ut), out.transpose(1, 2))
    assert not torch.allclose(blk(ut), out.transpose(1, 2))


def test_uniform_quadrature_is_a_no_op_and_nonuniform_is_not():
    blk = _block(2, "chained")
    u = torch.randn(1, 6, 5, 12, dtype=torch.float64)
    ones = [torch.ones(6, dtype=torch.float64), torch.ones(5, dtype=torch.float64)]
    torch.testing.assert_close(blk(u, weights=ones), blk(u))
    w = [quadrature_weights(torch.tensor([0.0, 0.05, 0.1, 0.3, 0.6, 0.9], dtype=torch.float64), 1.0), ones[1]]
    assert not torch.allclose(blk(u, weights=w), blk(u))


def test_axis_pooling_weighted_mean():
    u = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(AxisPooling.axis_mean(u, 0), u.mean(2))
    torch.testing.assert_close(AxisPooling.axis_mean(u, 1), u.mean(1))
    w = [torch.ones(3), torch.tensor([0.5, 1.5, 1.0, 1.0])]
    torch.testing.assert_close(AxisPooling.axis_mean(u, 0, w), (u * w[1].view(1, 1, 4, 1)).mean(2))


def test_wrong_rank_and_options_are_clear_errors():
    blk = FactorizedAttention(8, 3, heads=2, dim_head=4)
    with pytest.raises(ValueError, match="3-D"):
        blk(torch.randn(1, 4, 4, 8))
    with pytest.raises(ValueError, match="mode"):
        FactorizedAttention(8, 2, mode="sequential")
    with pytest.raises(ValueError, match="spatial_dims"):
        FactorizedAttention(8, 4)
