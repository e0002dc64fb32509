"""3-D periodic incompressible Navier–Stokes, pseudo-spectral (Fourier–Galerkin), 2/3-rule dealiased.

    ∂u/∂t = P[u × ω] − ν |k|² û,      ω = ∇ × u,      ∇·u = 0,      on [0, L)³ (default L = 2π)

(rotational form: ``u·∇u = ω × u + ∇|u|²/2``; the gradient and the pressure are removed by the Leray projection
``P f̂ = f̂ − k (k·f̂)/|k|²``). Time stepping: classic RK4 with an integrating factor ``exp(−ν|k|² t)``, so the
viscous decay of each mode is exact and the step is limited only by advection (CFL). The state is kept
dealiased (modes with ``|k_i| ≥ n/3`` on any axis are zero: alias-free for every n), which makes the semi-discrete system conserve
energy and helicity exactly when ν = 0 (the products of band-limited fields are alias-free on the kept modes).

Fields are numpy arrays ``u [3, n, n, n]`` (components u, v, w on axes x, y, z; grid ``x_j = j L / n``).

    solver = NavierStokes3D(n=32, nu=0.005)
    times, snaps = solver.solve(taylor_green(32), times=np.linspace(0, 5, 11))   # snaps [T, 3, n, n, n]

Verified (tests/solvers/test_navier_stokes_3d.py) against the Taylor–Green vortex's exact initial state
(E = 1/8, Z = ½⟨|ω|²⟩ = 3/8), the hand-derived initial tendency ``∂u/∂t = −(1/8)(sin2x cos2z, sin2y cos2z,
−sin2z(cos2x + cos2y))``, its short-time inviscid enstrophy series ``Z(t) = 3/8 + 5t²/128 + O(t⁴)``, the
energy budget ``dE/dt = −2νZ``, inviscid energy/helicity conservation and RK4's fourth-order convergence.
"""

from __future__ import annotations

import math

import numpy as np

from sciformer.solvers.time_stepping import if_rk4_step


def taylor_green(n: int, amplitude: float = 1.0, shift=(0.0, 0.0, 0.0), length: float = 2 * math.pi) -> np.ndarray:
    """The 3-D Taylor–Green vortex ``u = A(sin x cos y cos z, −cos x sin y cos z, 0)`` on an n³ grid."""
    x = (np.arange(n) * length / n) * (2 * math.pi / length)
    X, Y, Z = np.meshgrid(x + shift[0], x + shift[1], x + shift[2], indexing="ij")
    u = amplitude * np.sin(X) * np.cos(Y) * np.cos(Z)
    v = -amplitude * np.cos(X) * np.sin(Y) * np.cos(Z)
    return np.stack([u, v, np.zeros_like(u)])


class NavierStokes3D:
    """Pseudo-spectral solver on an n³ periodic grid.

    Args:
        n: grid points per axis (even).
        nu: kinematic viscosity (0 = Euler).
        length: domain edge L.
        dealias: apply the 2/3 rule (turn off only to study aliasing).
    """

    def __init__(self, n: int = 32, nu: float = 0.005, length: float = 2 * math.pi, dealias: bool = True):
        if n < 4 or n % 2:
            raise ValueError(f"n must be an even number >= 4, got {n}")
        if nu < 0:
            raise ValueError(f"nu must be >= 0, got {nu}")
        self.n, self.nu, self.length = n, nu, length
        k = np.fft.fftfreq(n, 1.0 / n) * (2 * math.pi / length)
        kz = np.fft.rfftfreq(n, 1.0 / n) * (2 * math.pi / length)
        self.k = np.stack(np.meshgrid(k, k, kz, indexing="ij"))  # [3, n, n, n/2+1]
        self.k2 = (self.k ** 2).sum(0)
        self.k2_safe = np.where(self.k2 == 0, 1.0, self.k2)
        cut = n / 3 * (2 * math.pi / length)
        self.mask = (np.abs(self.k) < cut - 1e-9).all(0) if dealias else np.ones_like(self.k2, dtype=bool)

    # ---- transforms and diagnostics ----------------------------------------------------------------
    def fft(self, u: np.ndarray) -> np.ndarray:
        return np.fft.rfftn(u, axes=(-3, -2, -1))

    def ifft(self, u_hat: np.ndarray) -> np.ndarray:
        return np.fft.irfftn(u_hat, s=(self.n,) * 3, axes=(-3, -2, -1))

    def project(self, f_hat: np.ndarray) -> np.ndarray:
        """Leray projection onto divergence-free fields (the mean mode is kept)."""
        return f_hat - self.k * ((self.k * f_hat).sum(0) / self.k2_safe)

    def curl_hat(self, u_hat: np.ndarray) -> np.ndarray:
        ik = 1j * self.k
        return np.stack([ik[1] * u_hat[2] - ik[2] * u_hat[1],
                         ik[2] * u_hat[0] - ik[0] * u_hat[2],
                         ik[0] * u_hat[1] - ik[1] * u_hat[0]])

    def prepare(self, u: np.ndarray) -> np.ndarray:
        """Spectral state of a physical field: transformed, projected and dealiased."""
        u = np.asarray(u, dtype=np.float64)
        if u.shape != (3, self.n, self.n, self.n):
            raise ValueError(f"velocity must have shape (3, {self.n}, {self.n}, {self.n}), got {u.shape}")
        if not np.isfinite(u).all():
            raise ValueError("initial velocity contains NaN or infinite values")
        return self.project(self.fft(u)) * self.mask

    def nonlinear(self, u_hat: np.ndarray) -> np.ndarray:
        """``P[u × ω]`` (dealiased) for the spectral velocity."""
        u = self.ifft(u_hat)
        w = self.ifft(self.curl_hat(u_hat))
        cross = np.stack([u[1] * w[2] - u[2] * w[1], u[2] * w[0] - u[0] * w[2], u[0] * w[1] - u[1] * w[0]])
        return self.project(self.fft(cross)) * self.mask

    def rhs(self, u_hat: np.ndarray) -> np.ndarray:
        """Full tendency ``∂û/∂t`` (nonlinear + viscous)."""
        return self.nonlinear(u_hat) - self.nu * self.k2 * u_hat

    def energy(self, u: np.ndarray) -> float:
        """Mean kinetic energy ``½⟨|u|²⟩`` of a physical field."""
        return 0.5 * float((np.asarray(u) ** 2).sum(0).mean())

    def enstrophy(self, u: np.ndarray) -> float:
        """``½⟨|ω|²⟩`` of a physical field (vorticity computed spectrally)."""
        w = self.ifft(self.curl_hat(self.fft(np.asarray(u, dtype=np.float64))))
        return 0.5 * float((w ** 2).sum(0).mean())

    def helicity(self, u: np.ndarray) -> float:
        """``⟨u·ω⟩``."""
        u = np.asarray(u, dtype=np.float64)
        w = self.ifft(self.curl_hat(self.fft(u)))
        return float((u * w).sum(0).mean())

    def divergence(self, u: np.ndarray) -> float:
        """Max |∇·u| (spectral)."""
        d = self.ifft(1j * (self.k * self.fft(np.asarray(u, dtype=np.float64))).sum(0)[None])[0]
        return float(np.abs(d).max())

    def energy_spectrum(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shell-summed spectrum E(k) over integer shells (in units of 2π/L), ``Σ_k E(k) = ½⟨|u|²⟩``."""
        u_hat = self.fft(np.asarray(u, dtype=np.float64)) / self.n ** 3
        weight = np.full(self.k2.shape, 2.0)  # rfft: each kept kz > 0 mode stands for ±kz
        weight[..., 0] = 1.0
        if self.n % 2 == 0:
            weight[..., -1] = 1.0
        e = 0.5 * weight * (np.abs(u_hat) ** 2).sum(0)
        shell = np.rint(np.sqrt(self.k2) * self.length / (2 * math.pi)).astype(int)
        spec = np.bincount(shell.ravel(), weights=e.ravel())
        return np.arange(len(spec)), spec

    # ---- time stepping -------------------------------------------------------------------------------
    def stable_dt(self, u: np.ndarray, cfl: float = 0.5) -> float:
        """Advective time step ``cfl · Δx / max|u|`` (viscosity is integrated exactly)."""
        umax = float(np.abs(np.asarray(u)).max())
        return cfl * (self.length / self.n) / max(umax, 1e-12)

    def step(self, u_hat: np.ndarray, dt: float) -> np.ndarray:
        """One integrating-factor RK4 step of the spectral state."""
        return if_rk4_step(u_hat, dt, self.nu * self.k2, self.nonlinear)

    def solve(self, u0: np.ndarray, times, dt: float | None = None, cfl: float = 0.5,
              callback=None) -> tuple[np.ndarray, np.ndarray]:
        """Integrate from ``times[0]`` and return ``(times, snapshots [T, 3, n, n, n])`` (float64).

        ``dt`` defaults to ``stable_dt(u0, cfl)``; each output interval is split into equal steps ≤ dt, so
        snapshots land exactly on ``times``. ``callback(i, u)`` is called per snapshot (e.g. progress).
        """
        times = np.asarray(times, dtype=np.float64)
        if times.ndim != 1 or len(times) < 1 or (np.diff(times) <= 0).any():
            raise ValueError("times must be a strictly increasing 1-D array")
        u_hat = self.prepare(u0)
        dt = dt or self.stable_dt(self.ifft(u_hat), cfl)
        out = np.empty((len(times), 3, self.n, self.n, self.n))
        out[0] = self.ifft(u_hat)
        if callback:
            callback(0, out[0])
        for i in range(1, len(times)):
            span = times[i] - times[i - 1]
            steps = max(1, math.ceil(span / dt - 1e-9))
            for _ in range(steps):
                u_hat = self.step(u_hat, span / steps)
            out[i] = self.ifft(u_hat)
            if not np.isfinite(out[i]).all():
                raise FloatingPointError(f"solution blew up before t={times[i]:g}; lower dt or cfl")
            if callback:
                callback(i, out[i])
        return times, out
