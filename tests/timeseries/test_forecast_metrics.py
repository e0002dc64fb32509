"""Forecast metrics against hand-computed values and a closed form (Gaussian CRPS)."""

import math

import torch

from sciformer.metrics.forecast import MASE, QuantileCRPS, WeightedQuantileLoss, pinball_loss


def test_pinball_loss_hand_computed():
    y = torch.tensor([1.0, 4.0])
    q = torch.tensor([[0.0, 2.0], [5.0, 4.0]])  # [value, level]
    # level 0.1: y=1,q=0 -> 0.1*1; y=4,q=5 -> 0.9*1 | level 0.9: y=1,q=2 -> 0.1*1; y=4,q=4 -> 0
    loss = pinball_loss(q, y, [0.1, 0.9], reduction="none")
    torch.testing.assert_close(loss, torch.tensor([[0.1, 0.1], [0.9, 0.0]]))
    torch.testing.assert_close(pinball_loss(q, y, [0.1, 0.9]), torch.tensor(1.1 / 4))


def test_quantile_crps_matches_gaussian_closed_form():
    # CRPS(N(mu, s), y) = s [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)], z = (y - mu) / s
    levels = [(k + 0.5) / 2000 for k in range(2000)]
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    mu, s = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    y = torch.tensor([0.0, 1.0, 2.5], dtype=torch.float64)
    q = mu[:, None] + s[:, None] * normal.icdf(torch.tensor(levels, dtype=torch.float64))
    z = (y - mu) / s
    exact = s * (z * (2 * normal.cdf(z) - 1) + 2 * normal.log_prob(z).exp() - 1 / math.sqrt(math.pi))
    m = QuantileCRPS(levels)
    m.update(q.view(3, 1, 1, -1), y.view(3, 1, 1))
    torch.testing.assert_close(m.compute(), exact.mean(), rtol=2e-3, atol=0)


def test_wql_hand_computed_and_batch_independent():
    y = torch.tensor([2.0, -2.0, 4.0])
    q = torch.stack([y - 1, y + 1], -1)  # levels 0.25 / 0.75, each off by one
    # level 0.25: under-forecast by 1 -> 0.25 each, sum 0.75; level 0.75: over by 1 -> 0.25 each, sum 0.75
    m = WeightedQuantileLoss([0.25, 0.75])
    m.update(q[:2], y[:2])
    m.update(q[2:], y[2:])
    torch.testing.assert_close(m.compute(), torch.tensor(2 * 0.75 / 8.0, dtype=torch.float64))


def test_mase_hand_computed():
    # one window, two variates; context diffs: variate 0 |1,2| mean 1.5; variate 1 |2,2| mean 2
    context = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [3.0, 4.0]]])  # [B=1, L=3, N=2]
    target = torch.tensor([[[3.0, 4.0], [3.0, 4.0]]])
    pred = torch.tensor([[[4.0, 4.0], [1.0, 0.0]]])
    # errors: variate 0 (1 + 2)/2 = 1.5 -> 1.0; variate 1 (0 + 4)/2 = 2 -> 1.0; mean 1.0
    m = MASE()
    m.update(pred, target, context)
    torch.testing.assert_close(m.compute(), torch.tensor(1.0, dtype=torch.float64))
    seasonal = MASE(seasonality=2)  # scale |3-0|, |4-0| = 3, 4 -> 1.5/3 and 2/4
    seasonal.update(pred, target, context)
    torch.testing.assert_close(seasonal.compute(), torch.tensor(0.5, dtype=torch.float64))
