import pytest
import torch

from sciformer.nn.conditional_norm import TimeConditionedLayerNorm


def _randomised(dim, **kw):
    norm = TimeConditionedLayerNorm(dim, **kw).double()
    g = torch.Generator().manual_seed(0)
    for p in norm.parameters():
        p.data = torch.randn(p.shape, generator=g, dtype=torch.float64)
    return norm


@pytest.mark.parametrize("shape", [(3, 5, 8), (3, 4, 6, 8)])
def test_matches_poseidon_formula_float64(shape):
    """y = (W_γ t + b_γ)(x − μ)/sqrt(σ² + eps) + (W_β t + b_β), σ² = E[x²] − μ², per sample t."""
    norm = _randomised(8, eps=1e-5)
    x = torch.randn(*shape, dtype=torch.float64)
    t = torch.tensor([0.0, 0.35, 1.0], dtype=torch.float64)
    mu = x.mean(-1, keepdim=True)
    var = (x**2).mean(-1, keepdim=True) - mu**2
    tb = t.reshape(-1, *([1] * (x.ndim - 1)))
    expected = (norm.weight_t * tb + norm.weight) * (x - mu) / torch.sqrt(var + 1e-5) + (norm.bias_t * tb + norm.bias)
    torch.testing.assert_close(norm(x, t), expected, rtol=1e-10, atol=1e-10)


def test_steady_means_lead_time_one():
    norm = _randomised(8)
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    torch.testing.assert_close(norm(x, None), norm(x, torch.ones(2, dtype=torch.float64)))


def test_fresh_norm_is_a_layernorm_and_unconditioned_ignores_t():
    x = torch.randn(2, 5, 8)
    ref = torch.nn.functional.layer_norm(x, (8,))
    torch.testing.assert_close(TimeConditionedLayerNorm(8)(x, torch.tensor([0.1, 0.9])), ref)
    plain = _randomised(8, time_conditioning=False)
    assert {n for n, _ in plain.named_parameters()} == {"weight", "bias"}
    xd = x.double()
    torch.testing.assert_close(plain(xd, torch.tensor([0.1, 0.9])), plain(xd, None))


def test_parameter_count_matches_upstream_linear_pair():
    # Poseidon's ConditionalLayerNorm is two nn.Linear(1, C): 4C parameters.
    assert sum(p.numel() for p in TimeConditionedLayerNorm(48).parameters()) == 4 * 48


@pytest.mark.parametrize("steady", [False, True])
def test_network_modulation_equals_each_norms_own(steady):
    """γ(t), β(t) of all norms from one product (``modulations``), through the hand-written backward: the same
    outputs and the same gradients of x and of all four parameters of every norm as each norm on its own."""
    from sciformer.nn.conditional_norm import assign_slots, modulations

    norms = [_randomised(8), _randomised(12)]
    for i, n in enumerate(norms):  # different parameters per norm
        for p in n.parameters():
            p.data.mul_(1.0 + i)
    assign_slots(norms)
    xs = [torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True),
          torch.randn(3, 2, 4, 12, dtype=torch.float64, requires_grad=True)]
    t = None if steady else torch.tensor([0.0, 0.35, 1.0], dtype=torch.float64)
    cot = [torch.randn_like(x) for x in xs]
    results = []
    for shared in (False, True):
        cond = modulations(norms, t) if shared else t
        loss = sum((n(x, cond) * c).sum() for n, x, c in zip(norms, xs, cot))
        params = [p for n in norms for p in n.parameters()]
        results.append(torch.autograd.grad(loss, xs + params))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
