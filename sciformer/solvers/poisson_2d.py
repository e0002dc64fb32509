"""2-D Poisson equation ``−Δu = f`` on the unit square with ``u = 0`` on the boundary: 5-point finite
differences solved exactly by a fast sine transform (DST-I, built on numpy's FFT).

The grid has n points per axis including both boundaries, ``x_j = j/(n−1)``; the boundary values are 0 and
the n−2 interior points per axis are unknowns. The sine modes ``sin(πpx)sin(πqy)`` are the exact
eigenvectors of the 5-point Laplacian with eigenvalues ``(4/h²)(sin²(πph/2) + sin²(πqh/2))``, so the solve
is direct (no iteration) and exact up to round-off for the discrete system; the discretisation error is
O(h²).

Verified in tests/solvers/test_poisson_2d.py: a discrete manufactured solution recovered to round-off (the
source made by applying the 5-point stencil directly), and second-order convergence to an analytic solution.
"""

from __future__ import annotations

import math

import numpy as np


def dst1(a: np.ndarray, axis: int) -> np.ndarray:
    """Unnormalised DST-I ``X_p = Σ_j a_j sin(π(j+1)(p+1)/(m+1))`` along ``axis`` via an odd extension + FFT."""
    a = np.moveaxis(np.asarray(a, dtype=np.float64), axis, -1)
    m = a.shape[-1]
    ext = np.zeros((*a.shape[:-1], 2 * (m + 1)))
    ext[..., 1:m + 1] = a
    ext[..., m + 2:] = -a[..., ::-1]
    out = -np.fft.rfft(ext, axis=-1)[..., 1:m + 1].imag / 2
    return np.moveaxis(out, -1, axis)


def grid(n: int) -> np.ndarray:
    """The n node coordinates ``j/(n−1)`` (boundaries included)."""
    return np.linspace(0.0, 1.0, n)


def laplacian_5point(u: np.ndarray) -> np.ndarray:
    """The 5-point Laplacian at interior nodes of a field with its boundary values (zeros on the boundary)."""
    h = 1.0 / (u.shape[0] - 1)
    out = np.zeros_like(u, dtype=np.float64)
    out[1:-1, 1:-1] = (u[2:, 1:-1] + u[:-2, 1:-1] + u[1:-1, 2:] + u[1:-1, :-2] - 4 * u[1:-1, 1:-1]) / h ** 2
    return out


def solve_poisson(f: np.ndarray) -> np.ndarray:
    """Solve ``−Δ_h u = f`` at interior nodes with ``u = 0`` on the boundary; ``f`` is [n, n] (its boundary
    values are ignored); returns u [n, n] with zero boundary rows and columns."""
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] != f.shape[1] or f.shape[0] < 3:
        raise ValueError(f"the source must be a square [n, n] array with n >= 3, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("the source contains NaN or infinite values")
    n = f.shape[0]
    m, h = n - 2, 1.0 / (n - 1)
    s = np.sin(math.pi * np.arange(1, m + 1) * h / 2) ** 2 * (4 / h ** 2)
    coef = dst1(dst1(f[1:-1, 1:-1], 0), 1) / (s[:, None] + s[None, :])
    u = np.zeros_like(f)
    u[1:-1, 1:-1] = dst1(dst1(coef, 0), 1) * (2 / (m + 1)) ** 2  # DST-I is its own inverse up to (2/(m+1))
    return u
