"""2-D acoustic wave equation with a spatially varying speed, periodic, spectral in space, leapfrog in time.

    ∂²u/∂t² = c(x, y)² Δu      on [0, L)² (default L = 1)

Δ is the Fourier (spectral) Laplacian, c² multiplies pointwise. With ``W = diag(1/c²)`` and the symmetric
negative semi-definite spectral Laplacian ``D``, leapfrog ``W(uⁿ⁺¹ − 2uⁿ + uⁿ⁻¹) = Δt² D uⁿ`` conserves the
discrete energy exactly (up to round-off):

    E^{n+½} = ½ Σ (uⁿ⁺¹ − uⁿ)²/(c² Δt²) − ½ Σ uⁿ⁺¹ · D uⁿ      (× cell area)

(the continuous energy ``½∫ u_t²/c² + |∇u|²`` up to O(Δt²)). It is stable for ``Δt · c_max · |k|_max < 2``;
the step is ``cfl`` times that bound, the same for the whole run (leapfrog needs a constant step), and
output intervals must be uniform.

Verified in tests/solvers/test_wave_2d.py: exact discrete energy conservation with a variable c, the analytic
plane wave with constant c (second order in Δt), and leapfrog's exact discrete dispersion relation.
"""

from __future__ import annotations

import math

import numpy as np


class Wave2D:
    """Leapfrog/spectral solver for ``u_tt = c² Δu`` on an n×n periodic grid (``c`` [n, n] > 0)."""

    def __init__(self, c: np.ndarray, length: float = 1.0):
        c = np.asarray(c, dtype=np.float64)
        if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] % 2 or c.shape[0] < 4:
            raise ValueError(f"c must be a square [n, n] field with even n >= 4, got shape {c.shape}")
        if not np.isfinite(c).all() or (c <= 0).any():
            raise ValueError("the wave speed c must be finite and positive everywhere")
        self.n, self.length, self.c = c.shape[0], length, c
        self.c2 = c ** 2
        k = np.fft.fftfreq(self.n, 1.0 / self.n) * (2 * math.pi / length)
        ky = np.fft.rfftfreq(self.n, 1.0 / self.n) * (2 * math.pi / length)
        kx, ky = np.meshgrid(k, ky, indexing="ij")
        self.k2 = kx ** 2 + ky ** 2

    @property
    def grid(self) -> np.ndarray:
        return np.arange(self.n) * self.length / self.n

    def laplacian(self, u: np.ndarray) -> np.ndarray:
        return np.fft.irfft2(-self.k2 * np.fft.rfft2(u), s=(self.n, self.n))

    def stable_dt(self, cfl: float = 0.5) -> float:
        """``cfl`` × the leapfrog bound ``2 / (c_max |k|_max)``."""
        return cfl * 2.0 / (float(self.c.max()) * math.sqrt(float(self.k2.max())))

    def energy(self, u_now: np.ndarray, u_next: np.ndarray, dt: float) -> float:
        """The conserved discrete energy between two consecutive leapfrog levels (see module docstring)."""
        area = (self.length / self.n) ** 2
        kinetic = 0.5 * float((((u_next - u_now) / dt) ** 2 / self.c2).sum())
        potential = -0.5 * float((u_next * self.laplacian(u_now)).sum())
        return area * (kinetic + potential)

    def solve(self, u0: np.ndarray, times, v0: np.ndarray | None = None, dt: float | None = None,
              cfl: float = 0.5, return_last_pair: bool = False):
        """Snapshots ``u`` [T, n, n] at uniform ``times`` from displacement ``u0`` and velocity ``v0`` (default 0).

        The first step is the second-order Taylor start ``u¹ = u⁰ + Δt v⁰ + ½Δt² c²Δu⁰``. With
        ``return_last_pair`` also returns the last two levels ``(uᴺ⁻¹, uᴺ)`` and Δt (for energy checks).
        """
        times = np.asarray(times, dtype=np.float64)
        if times.ndim != 1 or len(times) < 2 or (np.diff(times) <= 0).any():
            raise ValueError("times must be a strictly increasing 1-D array of at least 2 times")
        span = np.diff(times)
        if not np.allclose(span, span[0], rtol=1e-9, atol=0):
            raise ValueError("leapfrog needs uniform output times")
        u = np.asarray(u0, dtype=np.float64)
        if u.shape != (self.n, self.n) or not np.isfinite(u).all():
            raise ValueError(f"u0 must be a finite ({self.n}, {self.n}) array")
        v = np.zeros_like(u) if v0 is None else np.asarray(v0, dtype=np.float64)
        steps = max(1, math.ceil(span[0] / (dt or self.stable_dt(cfl)) - 1e-9))
        h = span[0] / steps
        if h * math.sqrt(float(self.k2.max())) * float(self.c.max()) >= 2:
            raise ValueError(f"dt={h:g} violates the leapfrog stability bound; lower dt or cfl")
        out = np.empty((len(times), self.n, self.n))
        out[0] = u
        prev, u = u, u + h * v + 0.5 * h * h * self.c2 * self.laplacian(u)
        for j in range(1, len(times)):
            for s in range(steps):
                if j == 1 and s == 0:
                    continue  # the Taylor start took this step
                prev, u = u, 2 * u - prev + h * h * self.c2 * self.laplacian(u)
            out[j] = u
            if not np.isfinite(u).all():
                raise FloatingPointError(f"solution blew up before t={times[j]:g}")
        return (out, (prev, u), h) if return_last_pair else out


def plane_wave(n: int, kx: int, ky: int, c: float, t: float, length: float = 1.0) -> np.ndarray:
    """``cos(k·x − c|k|t)`` with integer wave numbers (kx, ky) in units of 2π/L: an exact solution for constant c."""
    x = np.arange(n) * length / n
    X, Y = np.meshgrid(x, x, indexing="ij")
    k = 2 * math.pi / length
    return np.cos(k * (kx * X + ky * Y) - c * k * math.hypot(kx, ky) * t)
