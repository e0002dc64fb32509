"""Point-wise errors of gridded fields: functional forms (torch) and torchmetrics ``Metric``s.

Layout: fields are ``[B, ..., *S]`` with the last ``spatial_dims`` axes spatial (default: everything after
``[B, C]``, i.e. ``spatial_dims = ndim - 2``); ``B`` is the sample axis. Every functional form reduces only the
spatial axes and returns one value per sample and remaining index (``[B, C]``, or ``[B, T, C]`` for
trajectories), so one function serves validation batches and rollouts alike. The ``Metric``s reduce over
samples with states that synchronise under DDP (sums with ``dist_reduce_fx="sum"``; per-sample values with
``"cat"`` where a median is needed). Definitions follow DECISIONS.md "Metrics"; compute them on
de-normalised (physical) fields unless a report says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

VRMSE_EPS = 1e-7  # The Well's ε in VRMSE
REL_EPS = 1e-10  # Poseidon: a zero denominator becomes 1e-10


def spatial_axes(x: Tensor, spatial_dims: int | None = None) -> tuple[int, ...]:
    """The trailing spatial axes of ``x`` (default: all after ``[B, C]``)."""
    d = x.ndim - 2 if spatial_dims is None else int(spatial_dims)
    if not 1 <= d <= x.ndim:
        raise ValueError(f"spatial_dims={spatial_dims} does not fit a tensor of shape {tuple(x.shape)}")
    return tuple(range(x.ndim - d, x.ndim))


def check_shapes(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")


# ---- functional forms ---------------------------------------------------------------------------
def mse(pred: Tensor, target: Tensor, spatial_dims: int | None = None) -> Tensor:
    """``mean_x (ŷ − y)²`` per sample and channel."""
    check_shapes(pred, target)
    return ((pred - target) ** 2).mean(spatial_axes(pred, spatial_dims))


def rmse(pred: Tensor, target: Tensor, spatial_dims: int | None = None) -> Tensor:
    """``sqrt(mean_x (ŷ − y)²)`` per sample and channel."""
    return mse(pred, target, spatial_dims).sqrt()


def mae(pred: Tensor, target: Tensor, spatial_dims: int | None = None) -> Tensor:
    """``mean_x |ŷ − y|`` per sample and channel."""
    check_shapes(pred, target)
    return (pred - target).abs().mean(spatial_axes(pred, spatial_dims))


def linf(pred: Tensor, target: Tensor, spatial_dims: int | None = None) -> Tensor:
    """``max_x |ŷ − y|`` per sample and channel (PDEBench's max error before its max over samples)."""
    check_shapes(pred, target)
    return (pred - target).abs().amax(spatial_axes(pred, spatial_dims))


def nrmse(pred: Tensor, target: Tensor, spatial_dims: int | None = None) -> Tensor:
    """PDEBench nRMSE per channel: ``sqrt(mean_x (ŷ − y)²) / sqrt(mean_x y²)`` (APEBench sums it over channels;
    that variant is not this one)."""
    axes = spatial_axes(pred, spatial_dims)
    return mse(pred, target, spatial_dims).sqrt() / (target ** 2).mean(axes).sqrt()


def vrmse(pred: Tensor, target: Tensor, spatial_dims: int | None = None, eps: float = VRMSE_EPS) -> Tensor:
    """The Well's VRMSE per channel: ``sqrt(mean_x (ŷ − y)² / (var_x(y) + 1e-7))`` (population variance);
    1 is the score of predicting the spatial mean."""
    axes = spatial_axes(pred, spatial_dims)
    return (mse(pred, target, spatial_dims) / (target.var(axes, correction=0) + eps)).sqrt()


def pearson(pred: Tensor, target: Tensor, spatial_dims: int | None = None) -> Tensor:
    """Pearson correlation per channel (mean-centred over space, The Well's PearsonR):
    ``Σ (ŷ − ȳ̂)(y − ȳ) / sqrt(Σ (ŷ − ȳ̂)² Σ (y − ȳ)²)``; NaN for a constant field (APEBench's cosine variant,
    without centring, is not this one)."""
    check_shapes(pred, target)
    axes = spatial_axes(pred, spatial_dims)
    pc, yc = pred - pred.mean(axes, keepdim=True), target - target.mean(axes, keepdim=True)
    return (pc * yc).mean(axes) / ((pc ** 2).mean(axes) * (yc ** 2).mean(axes)).sqrt()


def boundary_mask(shape: Sequence[int], axes: Sequence[int], device=None) -> Tensor:
    """Boolean grid ``[*shape]`` marking the first and last index along each of ``axes`` (spatial axis numbers)."""
    mask = torch.zeros(tuple(shape), dtype=torch.bool, device=device)
    for a in axes:
        if not 0 <= a < len(shape):
            raise ValueError(f"boundary axis {a} is not one of the {len(shape)} spatial axes")
        index = [slice(None)] * len(shape)
        for end in (0, -1):
            index[a] = end
            mask[tuple(index)] = True
    return mask


def boundary_rmse(pred: Tensor, target: Tensor, axes: Sequence[int], spatial_dims: int | None = None) -> Tensor:
    """RMSE over the boundary points of the non-periodic spatial ``axes`` (each point counted once):
    ``sqrt(mean_{x ∈ ∂Ω} (ŷ − y)²)`` per sample and channel. PDEBench's bRMSE divides the sum over the faces by
    ``2(nx + ny)`` and so counts corners twice; on large grids the two agree to O(1/n)."""
    check_shapes(pred, target)
    sp = spatial_axes(pred, spatial_dims)
    if not axes:
        raise ValueError("boundary_rmse needs at least one non-periodic axis")
    mask = boundary_mask(pred.shape[sp[0]:], axes, pred.device)
    err2 = ((pred - target) ** 2).flatten(sp[0])[..., mask.flatten()]
    return err2.mean(-1).sqrt()


def group_relative_error(pred: Tensor, target: Tensor, mask: Tensor | None = None,
                         groups: Sequence[Sequence[int]] | None = None, p: int = 1,
                         per_sample: bool = False) -> Tensor:
    """Poseidon's relative Lp error per channel group: ``(Σ|ŷ − y|^p / Σ|y|^p)^(1/p)`` with the sums over the
    group's scored channels and all points (a zero denominator becomes 1e-10). Fields are ``[B, C, *S]``.

    ``mask`` [B, C] (0 = padded channel, never scored; default all 1). ``groups``: channel indices per group
    (default: all channels in one). ``per_sample=False`` also sums over the batch (the training loss, a ratio of
    batch sums as in Poseidon) and returns [G]; ``per_sample=True`` returns [B, G]. A group with no scored channel
    gives NaN. Multiply by 100 for Poseidon's percent.
    """
    check_shapes(pred, target)
    if mask is None:
        mask = torch.ones(pred.shape[:2], device=pred.device)
    groups = [list(range(pred.shape[1]))] if groups is None else groups
    w = mask.to(pred.dtype).view(*mask.shape, *([1] * (pred.ndim - 2)))
    num = ((pred - target).abs() ** p * w).flatten(2).sum(-1)  # [B, C]
    den = (target.abs() ** p * w).flatten(2).sum(-1)
    cnt = mask.to(pred.dtype)
    out = []
    for g in groups:
        g = list(g)
        n, d, c = num[:, g].sum(1), den[:, g].sum(1), cnt[:, g].sum(1)
        if not per_sample:
            n, d, c = n.sum(), d.sum(), c.sum()
        err = (n / (d + REL_EPS)) ** (1.0 / p)
        out.append(torch.where(c > 0, err, torch.full_like(err, float("nan"))))
    return torch.stack(out, -1)


def nan_median(x: Tensor, dim: int = 0) -> Tensor:
    """Median ignoring NaN, averaging the two middle values for an even count (``numpy.nanmedian``, as
    Poseidon's ``np.median``); ``torch.nanmedian`` would return the lower one."""
    return torch.nanquantile(x, 0.5, dim=dim)


# ---- Metrics ------------------------------------------------------------------------------------
class SampleMean(Metric):
    """Mean over samples of a per-sample value ``[B, ...] -> [...]``, skipping non-finite values (a blown-up
    rollout): ``Σ_b v_b / #finite``. States ``total`` and ``count`` are sums, so DDP reduces them exactly.
    The per-sample shape is taken from the first update (states start as scalars and broadcast). States are
    float64 so that sums over many samples stay exact (MPS has no float64: compute these on CPU there).

    Subclasses implement ``values(*args) -> Tensor [B, ...]``.
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, spatial_dims: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.spatial_dims = spatial_dims
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def values(self, *args, **kwargs) -> Tensor:
        raise NotImplementedError

    def update(self, *args, **kwargs) -> None:
        v = self.values(*args, **kwargs).detach().double()
        if self.total.ndim and self.total.shape != v.shape[1:]:
            raise ValueError(f"{type(self).__name__}: per-sample values of shape {tuple(v.shape[1:])} after "
                             f"earlier ones of shape {tuple(self.total.shape)}; use one metric per layout")
        ok = torch.isfinite(v)
        self.total = self.total + torch.where(ok, v, torch.zeros_like(v)).sum(0)
        self.count = self.count + ok.sum(0)

    def compute(self) -> Tensor:
        return self.total / self.count


class _PairMetric(SampleMean):
    fn = staticmethod(mse)

    def values(self, pred: Tensor, target: Tensor) -> Tensor:
        return type(self).fn(pred, target, self.spatial_dims)


class MSE(_PairMetric):
    """Mean over samples of ``mean_x (ŷ − y)²`` per channel."""
    fn = staticmethod(mse)


class RMSE(_PairMetric):
    """Mean over samples of ``sqrt(mean_x (ŷ − y)²)`` per channel (PDEBench RMSE)."""
    fn = staticmethod(rmse)


class MAE(_PairMetric):
    """Mean over samples of ``mean_x |ŷ − y|`` per channel."""
    fn = staticmethod(mae)


class NRMSE(_PairMetric):
    """Mean over samples of ``sqrt(mean_x (ŷ − y)²) / sqrt(mean_x y²)`` per channel (PDEBench nRMSE)."""
    fn = staticmethod(nrmse)


class VRMSE(_PairMetric):
    """Mean over samples of ``sqrt(mean_x (ŷ − y)² / (var_x y + 1e-7))`` per channel (The Well)."""
    fn = staticmethod(vrmse)


class PearsonCorrelation(_PairMetric):
    """Mean over samples of the mean-centred Pearson correlation per channel (pass ``[B, T, C, *S]`` with
    ``spatial_dims`` for one value per step)."""
    fn = staticmethod(pearson)


class LInf(Metric):
    """``max_b max_x |ŷ − y|`` per channel: the worst point error over all samples (PDEBench's max error).
    State ``max`` reduces with ``max`` under DDP; non-finite errors are skipped."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, spatial_dims: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.spatial_dims = spatial_dims
        self.add_state("max", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="max")

    def update(self, pred: Tensor, target: Tensor) -> None:
        v = linf(pred, target, self.spatial_dims).detach().double()
        v = torch.where(torch.isfinite(v), v, torch.zeros_like(v)).amax(0)
        self.max = torch.maximum(self.max, v)

    def compute(self) -> Tensor:
        return self.max


class BoundaryRMSE(SampleMean):
    """Mean over samples of the RMSE on the boundary points of the non-periodic ``axes`` (see
    :func:`boundary_rmse`)."""

    def __init__(self, axes: Sequence[int], spatial_dims: int | None = None, **kwargs):
        super().__init__(spatial_dims, **kwargs)
        if not axes:
            raise ValueError("BoundaryRMSE needs at least one non-periodic axis")
        self.axes = list(axes)

    def values(self, pred: Tensor, target: Tensor) -> Tensor:
        return boundary_rmse(pred, target, self.axes, self.spatial_dims)


class GroupRelativeError(Metric):
    """Poseidon's headline error: per sample and channel group ``e = 100·(Σ|ŷ−y|^p / Σ|y|^p)^(1/p)`` (percent,
    sums over the group's scored channels and all points; :func:`group_relative_error`), then over samples
    the median and the mean per group, and their means over groups (``mean_over_median``, ``mean_over_mean``).

    Per-sample errors are kept (state ``errors``, ``dist_reduce_fx="cat"``) because a median is not a sum:
    under DDP every rank gathers all samples before ``compute``. Samples whose group is fully masked are NaN
    and ignored. ``compute`` returns a dict of tensors: median [G], mean [G], mean_over_median, mean_over_mean.
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, groups: Sequence[Sequence[int]] | None = None, p: int = 1, percent: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.groups = None if groups is None else [list(g) for g in groups]
        self.p, self.scale = p, 100.0 if percent else 1.0
        self.add_state("errors", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        err = group_relative_error(pred.float(), target.float(), mask, self.groups, self.p, per_sample=True)
        self.errors.append(self.scale * err.detach())

    def compute(self) -> dict[str, Tensor]:
        errs = self.errors if isinstance(self.errors, Tensor) else torch.cat(self.errors)
        med, mean = nan_median(errs, 0), errs.nanmean(0)
        return {"median": med, "mean": mean, "mean_over_median": med.nanmean(), "mean_over_mean": mean.nanmean()}
