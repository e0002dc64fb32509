"""Forecast metrics as torchmetrics Metrics: MASE, quantile CRPS and weighted quantile loss (WQL).

Shapes: point forecasts and targets ``[B, H, N]``; quantile forecasts ``[B, H, N, Q]``; the lookback
``context`` ``[B, L, N]``. Sums accumulate over batches, so a metric does not depend on the batch size and
``compute()`` is the value over every window seen (and over ranks under DDP).

Definitions (the ones GluonTS / Chronos / Moirai report):
- pinball loss of level τ: ``ρ_τ(y, q) = max(τ (y − q), (τ − 1)(y − q))``.
- CRPS from quantiles: ``mean_τ 2 ρ_τ`` over all values — the quantile decomposition
  ``CRPS = ∫₀¹ 2 ρ_τ(y, F⁻¹(τ)) dτ`` evaluated at the model's levels (exact in the limit of dense levels).
- WQL: ``mean_τ [2 Σ ρ_τ / Σ |y|]`` (GluonTS ``mean_weighted_sum_quantile_loss``).
- MASE: per series (window × variate) ``mean_h |y − ŷ| / mean_t |c_t − c_{t−m}|`` over the context ``c`` with
  seasonality ``m``, then the mean over series; series with a constant context are skipped (scale 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric


def pinball_loss(pred: torch.Tensor, target: torch.Tensor, quantiles: Sequence[float] | torch.Tensor,
                 reduction: str = "mean") -> torch.Tensor:
    """Pinball (quantile) loss of ``pred`` [..., Q] against ``target`` [...] at levels ``quantiles`` [Q].

    ``reduction`` "mean" averages over everything, "none" returns [..., Q].
    """
    tau = torch.as_tensor(quantiles, dtype=pred.dtype, device=pred.device)
    diff = target.unsqueeze(-1) - pred
    loss = torch.maximum(tau * diff, (tau - 1) * diff)
    return loss.mean() if reduction == "mean" else loss


class QuantileCRPS(Metric):
    """CRPS estimated from quantile forecasts (mean over levels of twice the pinball loss)."""

    full_state_update = False

    def __init__(self, quantiles: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        self.quantiles = list(quantiles)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        loss = pinball_loss(pred.double(), target.double(), self.quantiles, reduction="none")
        self.total += 2 * loss.mean(-1).sum()
        self.count += target.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count


class WeightedQuantileLoss(Metric):
    """WQL: per level, 2 Σ pinball / Σ |y|, averaged over levels (scale-free; use on the physical scale)."""

    full_state_update = False

    def __init__(self, quantiles: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        self.quantiles = list(quantiles)
        self.add_state("numerator", torch.zeros(len(self.quantiles), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("denominator", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        loss = pinball_loss(pred.double(), target.double(), self.quantiles, reduction="none")
        self.numerator += 2 * loss.reshape(-1, len(self.quantiles)).sum(0)
        self.denominator += target.double().abs().sum()

    def compute(self) -> torch.Tensor:
        return (self.numerator / self.denominator).mean()


class MASE(Metric):
    """Mean absolute scaled error, scaled per series by the context's seasonal-naive in-sample error."""

    full_state_update = False

    def __init__(self, seasonality: int = 1, **kwargs):
        super().__init__(**kwargs)
        if seasonality < 1:
            raise ValueError(f"seasonality must be ≥ 1, got {seasonality}")
        self.seasonality = seasonality
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, context: torch.Tensor) -> None:
        m = self.seasonality
        if context.shape[1] <= m:
            raise ValueError(f"MASE needs a context longer than the seasonality {m}, got {context.shape[1]}")
        c = context.double()
        scale = (c[:, m:] - c[:, :-m]).abs().mean(1)  # [B, N]
        err = (pred.double() - target.double()).abs().mean(1)  # [B, N]
        ok = scale > 0
        self.total += (err[ok] / scale[ok]).sum()
        self.count += ok.sum()

    def compute(self) -> torch.Tensor:
        return self.total / self.count
