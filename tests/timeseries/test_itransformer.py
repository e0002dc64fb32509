"""iTransformer: published parameter count, reference maths in float64, normalisation invariance, any N."""

import math

import pytest
import torch

from sciformer import models
from sciformer.models.itransformer import ITransformer, ITransformerConfig


def test_parameter_count_etth1_96():
    # the reference code's ETTh1 96->96 model (d_model = d_ff = 256, 2 layers, 8 heads) has 841,568 parameters
    net = models.get("itransformer-etth1-96")
    assert sum(p.numel() for p in net.parameters()) == 841_568
    assert (net.config.d_model, net.config.e_layers, net.config.seq_len, net.config.pred_len) == (256, 2, 96, 96)
    assert models.get("itransformer-weather-720").config.e_layers == 3


def _reference(net: ITransformer, x, x_mark, train: bool = False, params=None):
    """The reference code's forward written out with explicit softmax attention, in float64 (``train``: with
    its dropout layers, drawn in its order; ``params``: differentiable copies of the weights)."""
    cfg = net.config
    p = params or {k: v.double() for k, v in net.state_dict().items()}
    drop = lambda z: torch.nn.functional.dropout(z, cfg.dropout, train)  # noqa: E731
    x, x_mark = x.double(), x_mark.double()
    means = x.mean(1, keepdim=True)
    xc = x - means
    std = torch.sqrt(xc.var(1, keepdim=True, unbiased=False) + 1e-5)
    tok = torch.cat([(xc / std).permute(0, 2, 1), x_mark.permute(0, 2, 1)], 1)
    h = drop(tok @ p["embed.weight"].T + p["embed.bias"])
    lin = lambda z, name: z @ p[f"{name}.weight"].T + p[f"{name}.bias"]  # noqa: E731
    ln = lambda z, name: torch.nn.functional.layer_norm(z, z.shape[-1:], p[f"{name}.weight"], p[f"{name}.bias"])  # noqa: E731
    B, T, D = h.shape
    E = D // cfg.n_heads
    for i in range(cfg.e_layers):
        pre = f"layers.{i}."
        q, k, v = (lin(h, pre + f"attention.{n}").view(B, T, cfg.n_heads, E) for n in ("query", "key", "value"))
        scores = torch.einsum("blhe,bshe->bhls", q, k) / math.sqrt(E)
        a = torch.einsum("bhls,bshd->blhd", drop(scores.softmax(-1)), v).reshape(B, T, D)
        h = ln(h + drop(lin(a, pre + "attention.out")), pre + "norm1")
        y = drop(lin(drop(torch.nn.functional.gelu(lin(h, pre + "ffn_in"))), pre + "ffn_out"))
        h = ln(h + y, pre + "norm2")
    out = lin(ln(h, "norm"), "projection").permute(0, 2, 1)[:, :, : x.shape[2]]
    return out * std + means


def test_forward_matches_reference_maths():
    torch.manual_seed(0)
    net = models.get("itransformer-tiny").eval()
    x, mark = torch.randn(3, 24, 5) * 4 + 2, torch.rand(3, 24, 4) - 0.5
    torch.testing.assert_close(net(x, mark).double(), _reference(net, x, mark), rtol=1e-4, atol=1e-4)


def test_training_forward_and_gradients_match_reference_with_dropout():
    # same dropout masks as the reference's nn.Dropout layers (same generator draws, same order), float64
    torch.manual_seed(0)
    net = models.get("itransformer-tiny", dropout=0.2).double().train()
    x, mark = torch.randn(3, 24, 5, dtype=torch.float64) * 4 + 2, torch.rand(3, 24, 4, dtype=torch.float64) - 0.5
    params = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
    torch.manual_seed(7)
    want = _reference(net, x, mark, train=True, params=params)
    torch.manual_seed(7)
    got = net(x, mark)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(got, net.eval()(x, mark))  # dropout was active
    got.square().mean().backward()
    want.square().mean().backward()
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.grad, params[name].grad, rtol=1e-9, atol=1e-12, msg=name)


def test_per_variate_normalisation_invariance():
    # with use_norm, an affine change of each variate (a_n > 0) maps the forecast by the same affine map
    torch.manual_seed(1)
    net = models.get("itransformer-tiny").eval()
    x, mark = torch.randn(2, 24, 3), torch.rand(2, 24, 4) - 0.5
    a, b = torch.tensor([0.5, 3.0, 10.0]), torch.tensor([-4.0, 0.0, 100.0])
    y = net(x, mark)
    torch.testing.assert_close(net(x * a + b, mark), y * a + b, rtol=1e-4, atol=2e-4)
    raw = models.get("itransformer-tiny", use_norm=False).eval()
    assert not torch.allclose(raw(x * a + b, mark), raw(x, mark) * a + b, atol=1e-2)


def test_any_number_of_variates_and_covariates_do_not_leak_into_outputs():
    torch.manual_seed(2)
    net = models.get("itransformer-tiny").eval()
    for n in (1, 3, 21):
        assert net(torch.randn(2, 24, n), torch.rand(2, 24, 4)).shape == (2, 12, n)
    # without time features the same weights run on variate tokens only
    assert net(torch.randn(2, 24, 3)).shape == (2, 12, 3)
    with pytest.raises(ValueError, match="lookback 20"):
        net(torch.randn(2, 20, 3))


def test_quantile_head_shapes_and_denormalisation():
    torch.manual_seed(3)
    net = models.get("itransformer-tiny", quantiles=[0.1, 0.5, 0.9]).eval()
    x = torch.randn(2, 24, 3)
    out = net(x)
    assert out.shape == (2, 12, 3, 3)
    torch.testing.assert_close(net(5 * x + 7), 5 * out + 7, rtol=1e-4, atol=5e-4)  # every level de-normalised
    with pytest.raises(ValueError, match="quantile levels"):
        ITransformer(ITransformerConfig(quantiles=[0.0, 0.5]))
