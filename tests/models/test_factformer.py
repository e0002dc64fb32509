"""FactFormer / IFactFormer models: shapes, implicit weight sharing, time conditioning, grids, bad input."""

import pytest
import torch

from sciformer import models
from sciformer.errors import DataError
from sciformer.models.factformer import FactFormer, FactFormerConfig


def _tiny(**kw):
    torch.manual_seed(0)
    cfg = dict(in_channels=3, out_channels=2, dim=16, depth=2, heads=2, dim_head=4)
    cfg.update(kw)
    return FactFormer(FactFormerConfig(**cfg))


def _n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("mode", ["chained", "parallel"])
@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("shape", [(8, 12), (6, 4, 5)])
def test_shapes(mode, implicit, shape):
    m = _tiny(spatial_dims=len(shape), mode=mode, implicit=implicit)
    x = torch.randn(2, 3, *shape)
    out = m(x, torch.tensor([0.1, 0.5]))
    assert out.shape == (2, 2, *shape) and out.dtype == torch.float32
    out.square().mean().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_registry_sizes_build():
    names = models.names()
    for name in ("factformer-2d", "factformer-3d", "ifactformer-m", "ifactformer-o", "factformer-2d-tiny",
                 "factformer-3d-tiny", "ifactformer-m-2d-tiny"):
        assert name in names
    m = models.get("factformer-2d-tiny", in_channels=4, out_channels=4)
    assert m(torch.randn(1, 4, 16, 16), None).shape == (1, 4, 16, 16)
    m = models.get("factformer-3d-tiny", in_channels=3, out_channels=3)
    assert m(torch.randn(1, 3, 8, 8, 8), torch.zeros(1)).shape == (1, 3, 8, 8, 8)
    big = models.get("ifactformer-m", in_channels=3, out_channels=3)
    assert big.config.implicit and big.config.mode == "parallel" and len(big.blocks) == 1


def test_implicit_shares_weights_and_explicit_stacks():
    p_impl = [_n_params(_tiny(implicit=True, depth=d)) for d in (1, 3, 10)]
    assert p_impl[0] == p_impl[1] == p_impl[2]
    p_expl = [_n_params(_tiny(implicit=False, depth=d)) for d in (1, 2, 3)]
    assert p_expl[1] - p_expl[0] == p_expl[2] - p_expl[1] > 0
    assert p_expl[0] == p_impl[0]  # one block either way
    # the implicit depth changes the function (more iterations of the same block)
    x = torch.randn(1, 3, 8, 8)
    a, b = _tiny(implicit=True, depth=1), _tiny(implicit=True, depth=4)
    for k in a.blocks[0].attn.kernel:  # FactFormer's 0.02 init makes the attention nearly silent at first
        k.to_q.weight.data.mul_(25)
        k.to_k.weight.data.mul_(25)
    b.load_state_dict(a.state_dict())
    assert not torch.allclose(a(x), b(x))


def _perturb_time_params(m):
    """Give the time-conditioning parameters non-trivial values (their init may make t a no-op)."""
    from sciformer.nn.conditional_norm import TimeConditionedLayerNorm

    g = torch.Generator().manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, TimeConditionedLayerNorm):
            for p in mod.parameters():
                p.data.add_(0.3 * torch.randn(p.shape, generator=g))


def test_time_conditioning_changes_outputs_only_through_t():
    m = _tiny(time_conditioning=True)
    _perturb_time_params(m)
    x = torch.randn(2, 3, 8, 8)
    t1, t2 = torch.tensor([0.2, 0.2]), torch.tensor([0.7, 0.7])
    y1, y2 = m(x, t1), m(x, t2)
    assert not torch.allclose(y1, y2)
    torch.testing.assert_close(m(x, t1), y1)  # deterministic
    torch.testing.assert_close(m(x, None), m(x, torch.ones(2)))  # steady: t = 1
    # per-sample: changing sample 1's lead time leaves sample 0's output unchanged
    y3 = m(x, torch.tensor([0.2, 0.9]))
    torch.testing.assert_close(y3[0], y1[0])
    assert not torch.allclose(y3[1], y1[1])
    # without conditioning, t is ignored
    m0 = _tiny(time_conditioning=False)
    torch.testing.assert_close(m0(x, t1), m0(x, t2))
    assert _n_params(m0) < _n_params(m)


def test_runs_on_other_resolutions_and_nonuniform_grids():
    m = _tiny()
    for n in (8, 16, 20):
        assert m(torch.randn(1, 3, n, n), None).shape == (1, 2, n, n)
    # quadrature on a uniform grid changes nothing; on a non-uniform grid it does. FactFormer's small initial
    # kernels (gain 0.02) make the attention branch vanish after the instance norm's eps at init, so the
    # weights are drawn larger here, as after training
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.3)
    mq = _tiny(quadrature=True)
    mq.load_state_dict(m.state_dict())
    x = torch.randn(1, 3, 6, 5)
    torch.testing.assert_close(mq(x), m(x))
    cx = torch.tensor([0.0, 0.05, 0.1, 0.3, 0.55, 0.8])
    cy = torch.arange(5) / 5
    assert not torch.allclose(mq(x, coords=[cx, cy]), m(x, coords=[cx, cy]))
    with pytest.raises(DataError, match="coords"):
        m(x, coords=[cx, torch.arange(4) / 4])


def test_bad_input_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SCIFORMER_CHECK_FINITE", "1")  # the NaN check is an opt-in debug check (a host sync)
    m3 = _tiny(spatial_dims=3)
    with pytest.raises(DataError, match="3 spatial axes"):
        m3(torch.randn(1, 3, 8, 8), None)  # 2-D data into a 3-D model
    m2 = _tiny(spatial_dims=2)
    with pytest.raises(DataError, match="at least 2 points"):
        m2(torch.randn(1, 3, 8, 1), None)
    x = torch.randn(1, 3, 8, 8)
    x[0, 1, 2, 3] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        m2(x, None)
    with pytest.raises(DataError, match="input channels"):
        m2(torch.randn(1, 2, 8, 8), None)
    with pytest.raises(DataError, match="lead time"):
        m2(torch.randn(2, 3, 8, 8), torch.zeros(3))
    with pytest.raises(ValueError, match="mode"):
        _tiny(mode="serial")


def test_tiny_training_reduces_loss():
    """A few AdamW steps on a fixed operator (a shift + channel mix) lower the loss substantially."""
    torch.manual_seed(0)
    m = _tiny(in_channels=2, out_channels=2, dim=16)
    x = torch.randn(4, 2, 8, 8)
    y = torch.roll(x, 2, dims=-1).flip(1) * 0.5 + x.mean((2, 3), keepdim=True)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = (m(x, None) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_residual_adds_the_leading_input_channels():
    m = _tiny(residual=False)
    r = _tiny(residual=True)
    r.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 8, 8)
    t = torch.tensor([0.3, 0.6])
    torch.testing.assert_close(r(x, t), m(x, t) + x[:, :2])
    with pytest.raises(ValueError, match="residual"):
        _tiny(in_channels=1, out_channels=2, residual=True)
