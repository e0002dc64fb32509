"""Spectral metrics of gridded fields: isotropic energy spectrum, its relative error, errors in radial bands.

Wavenumbers are integers ``κ`` in cycles per domain length along each axis (``fftfreq(n) · n``) and
``|κ| = sqrt(Σ κ_i²)``; Fourier coefficients are normalised by the number of points ``N`` so that values do
not depend on the resolution (Parseval: ``Σ_κ |f̂(κ)|² = mean_x f²``). The FFT assumes periodic fields; on
other grids the jump at the boundary leaks power to high wavenumbers (PDEBench computes its fRMSE anyway):
``sciformer.metrics.physics.plan_metrics`` says so in its notes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from sciformer.metrics.fields import SampleMean, check_shapes, spatial_axes

PDEBENCH_BANDS = (0.0, 4.0, 12.0, math.inf)  # PDEBench fRMSE low / mid / high: |κ| in [0,4), [4,12), [12, ∞)
BAND_EPS = 1e-7  # The Well's ε in the per-bin normalised error


def wavenumber_magnitude(shape: Sequence[int], device=None) -> Tensor:
    """``|κ|`` [*shape] in float64 for a grid of ``shape`` (integer wavenumbers per axis, FFT order)."""
    k2 = torch.zeros((), dtype=torch.float64, device=device)
    for i, n in enumerate(shape):
        k = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64, device=device)
        k2 = k2 + k.view(*([1] * i), n, *([1] * (len(shape) - i - 1))) ** 2
    return k2.sqrt()


def _fft(f: Tensor, axes: tuple[int, ...]) -> Tensor:
    """``f̂ = FFT(f) / N`` over ``axes`` in double precision (complex128)."""
    n = math.prod(f.shape[a] for a in axes)
    return torch.fft.fftn(f.double(), dim=axes) / n


def energy_spectrum(f: Tensor, spatial_dims: int) -> tuple[Tensor, Tensor]:
    """Isotropic spectrum ``E(k) = ½ Σ_{|κ| ∈ [k−½, k+½)} |f̂(κ)|²`` of the trailing ``spatial_dims`` axes, per
    leading index. Returns ``k`` [K] and ``E`` [..., K] (float64) with ``K = min(S)//2 + 1``: shells beyond the
    smallest axis' Nyquist wavenumber (the grid's corners) are left out, so ``Σ_k E(k) = ½ mean_x f²`` only for
    fields without power there. Sum the spectra of the velocity components for the kinetic-energy spectrum.
    """
    axes = spatial_axes(f, spatial_dims)
    shape = tuple(f.shape[a] for a in axes)
    power = 0.5 * _fft(f, axes).abs().square().flatten(axes[0])  # [..., N]
    shell = wavenumber_magnitude(shape, f.device).round().long().flatten()
    kmax = min(shape) // 2
    keep = shell <= kmax
    e = power.new_zeros((*power.shape[:-1], kmax + 1))
    e.index_add_(-1, shell[keep], power[..., keep])
    return torch.arange(kmax + 1, device=f.device), e


def spectrum_error(e_pred: Tensor, e_true: Tensor) -> Tensor:
    """Relative energy-spectrum error over the last (shell) axis: ``Σ_k |E_pred(k) − E_true(k)| / Σ_k E_true(k)``."""
    return (e_pred - e_true).abs().sum(-1) / e_true.sum(-1)


def energy_spectrum_error(pred: Tensor, target: Tensor, spatial_dims: int | None = None) -> Tensor:
    """:func:`spectrum_error` of the isotropic spectra of ``pred`` and ``target``, per sample and channel."""
    check_shapes(pred, target)
    d = len(spatial_axes(pred, spatial_dims))
    return spectrum_error(energy_spectrum(pred, d)[1], energy_spectrum(target, d)[1])


def log_bands(shape: Sequence[int], n: int = 3) -> tuple[float, ...]:
    """``n`` log-spaced radial bands from ``|κ| = 1`` to the grid's largest ``|κ|`` (``sqrt(Σ (n_i/2)²)``), the
    first widened down to 0 — The Well's default bins of its binned spectral error on square grids."""
    top = math.sqrt(sum((s / 2) ** 2 for s in shape))
    edges = [top ** (i / n) for i in range(n + 1)]
    edges[0], edges[-1] = 0.0, math.inf
    return tuple(edges)


def spectral_band_error(pred: Tensor, target: Tensor, bands: Sequence[float] = PDEBENCH_BANDS,
                        spatial_dims: int | None = None, kind: str = "rmse") -> Tensor:
    """Error in radial wavenumber bands, per sample, channel and band (last axis, ``len(bands) − 1`` bands).

    With ``MSE_b = Σ_{band_lo ≤ |κ| < band_hi} |ê(κ)|²`` (``e = ŷ − y``, Parseval: ``Σ_b MSE_b = mean_x e²``
    when the bands cover every wavenumber) and ``E_b`` the same sum for ``y``:

    - ``kind="rmse"``: ``sqrt(MSE_b)``, the band's share of the RMSE;
    - ``kind="nmse"``: ``MSE_b / (E_b + 1e-7)`` (The Well's per-bin normalised spectral error).

    Presets: :data:`PDEBENCH_BANDS` (low/mid/high) and :func:`log_bands`. PDEBench's own fRMSE averages
    per-shell RMS values within a band (over the non-negative-frequency quadrant), so its numbers differ; these
    keep Parseval's identity.
    """
    if kind not in ("rmse", "nmse"):
        raise ValueError(f"kind must be 'rmse' or 'nmse', not {kind!r}")
    check_shapes(pred, target)
    edges = torch.tensor(list(bands), dtype=torch.float64)
    if len(edges) < 2 or not bool((edges[1:] > edges[:-1]).all()):
        raise ValueError(f"bands must be at least two increasing edges, got {list(bands)}")
    axes = spatial_axes(pred, spatial_dims)
    kmag = wavenumber_magnitude([pred.shape[a] for a in axes], pred.device).flatten()
    which = torch.bucketize(kmag, edges.to(pred.device), right=True) - 1  # band index, −1 / nb: outside
    nb = len(edges) - 1
    inside = (which >= 0) & (which < nb)
    err = _fft(pred - target, axes).abs().square().flatten(axes[0])[..., inside]
    mse_b = err.new_zeros((*err.shape[:-1], nb)).index_add_(-1, which[inside], err)
    if kind == "rmse":
        return mse_b.sqrt()
    true = _fft(target, axes).abs().square().flatten(axes[0])[..., inside]
    return mse_b / (true.new_zeros(mse_b.shape).index_add_(-1, which[inside], true) + BAND_EPS)


class EnergySpectrumError(SampleMean):
    """Mean over samples of ``Σ_k |E_pred(k) − E_true(k)| / Σ_k E_true(k)`` per channel (isotropic shells,
    :func:`energy_spectrum`)."""

    def values(self, pred: Tensor, target: Tensor) -> Tensor:
        return energy_spectrum_error(pred, target, self.spatial_dims)


class SpectralBandError(SampleMean):
    """Mean over samples of :func:`spectral_band_error` per channel and band (``kind`` rmse or nmse)."""

    def __init__(self, bands: Sequence[float] = PDEBENCH_BANDS, kind: str = "rmse", spatial_dims: int | None = None,
                 **kwargs):
        super().__init__(spatial_dims, **kwargs)
        if kind not in ("rmse", "nmse"):
            raise ValueError(f"kind must be 'rmse' or 'nmse', not {kind!r}")
        self.bands, self.kind = tuple(float(b) for b in bands), kind

    def values(self, pred: Tensor, target: Tensor) -> Tensor:
        return spectral_band_error(pred, target, self.bands, self.spatial_dims, self.kind)
