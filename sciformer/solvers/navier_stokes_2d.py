"""2-D periodic incompressible Navier–Stokes in vorticity form, pseudo-spectral, 2/3-rule dealiased.

    ∂ω/∂t + u·∇ω = ν Δω + f,      u = (∂ψ/∂y, −∂ψ/∂x),  −Δψ = ω,      on [0, L)² (default L = 1)
    ∂c/∂t + u·∇c = κ Δc           (optional passive tracer c)

``f`` is an optional static forcing of the vorticity equation (Kolmogorov flow: ``0.1 sin(2π(x+y))``).
Time stepping: classic RK4 with an integrating factor ``exp(−ν|k|²t)`` (``exp(−κ|k|²t)`` for the tracer), so
diffusion is exact and the step is limited only by advection; the step is re-chosen from the CFL number at the
start of every output interval and each interval is split into equal steps, so snapshots land exactly on
the requested times. The state is kept dealiased: modes with ``|k_i| ≥ n/3`` (in units of 2π/L) on either
axis are zero, which makes the products of kept fields alias-free on the kept modes for every n, so with
ν = 0 the semi-discrete system conserves energy and enstrophy exactly.

Fields are numpy arrays on the grid ``x_j = j L / n``, indexed ``[x, y]``.

    solver = NavierStokes2D(64, nu=1e-3)
    out = solver.solve(solver.vorticity(u0, v0), times=np.linspace(0, 1, 21))   # out["u"] [T, n, n]

Verified in tests/solvers/test_navier_stokes_2d.py: Taylor–Green decay ``exp(−2ν(2π)²t)``, the laminar
Kolmogorov spin-up, inviscid energy/enstrophy conservation of a random field, monotone decay with
viscosity, divergence-free velocities, RK4 order and spectral convergence under grid refinement.
"""

from __future__ import annotations

import math

import numpy as np

from sciformer.solvers.time_stepping import if_rk4_step


class NavierStokes2D:
    """Pseudo-spectral vorticity solver on an n×n periodic grid.

    Args:
        n: grid points per axis (even, ≥ 8).
        nu: kinematic viscosity (0 = Euler).
        forcing: optional static vorticity forcing ``f`` [n, n].
        kappa: tracer diffusivity (used when a tracer is solved; default ν).
        length: domain edge L.
    """

    def __init__(self, n: int = 64, nu: float = 1e-3, forcing: np.ndarray | None = None,
                 kappa: float | None = None, length: float = 1.0):
        if n < 8 or n % 2:
            raise ValueError(f"n must be an even number >= 8, got {n}")
        if nu < 0 or (kappa is not None and kappa < 0):
            raise ValueError(f"viscosity and diffusivity must be >= 0, got nu={nu}, kappa={kappa}")
        self.n, self.nu, self.length = n, nu, length
        self.kappa = nu if kappa is None else kappa
        kx = np.fft.fftfreq(n, 1.0 / n)
        ky = np.fft.rfftfreq(n, 1.0 / n)
        ix, iy = np.meshgrid(kx, ky, indexing="ij")
        self.mask = (np.abs(ix) < n / 3) & (np.abs(iy) < n / 3)  # strict: alias-free also when 3 | n
        self.kx, self.ky = ix * (2 * math.pi / length), iy * (2 * math.pi / length)
        self.k2 = self.kx ** 2 + self.ky ** 2
        self.inv_k2 = np.where(self.k2 == 0, 0.0, 1.0 / np.where(self.k2 == 0, 1.0, self.k2))
        self.forcing_hat = None
        if forcing is not None:
            forcing = np.asarray(forcing, dtype=np.float64)
            if forcing.shape != (n, n):
                raise ValueError(f"forcing must have shape ({n}, {n}), got {forcing.shape}")
            self.forcing_hat = self.fft(forcing) * self.mask

    @property
    def grid(self) -> np.ndarray:
        return np.arange(self.n) * self.length / self.n

    # ---- transforms and diagnostics ----------------------------------------------------------------
    def fft(self, a: np.ndarray) -> np.ndarray:
        return np.fft.rfft2(a, axes=(-2, -1))

    def ifft(self, a_hat: np.ndarray) -> np.ndarray:
        return np.fft.irfft2(a_hat, s=(self.n, self.n), axes=(-2, -1))

    def velocity_hat(self, w_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Biot–Savart: ``ψ̂ = ω̂/|k|²``, ``û = i k_y ψ̂``, ``v̂ = −i k_x ψ̂`` (zero mean velocity)."""
        psi = w_hat * self.inv_k2
        return 1j * self.ky * psi, -1j * self.kx * psi

    def velocity(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u_hat, v_hat = self.velocity_hat(self.fft(w))
        return self.ifft(u_hat), self.ifft(v_hat)

    def vorticity(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``ω = ∂v/∂x − ∂u/∂y`` (spectral); the divergent part of (u, v) does not enter."""
        return self.ifft(1j * self.kx * self.fft(v) - 1j * self.ky * self.fft(u))

    def divergence(self, u: np.ndarray, v: np.ndarray) -> float:
        """max |∇·u| (spectral)."""
        return float(np.abs(self.ifft(1j * self.kx * self.fft(u) + 1j * self.ky * self.fft(v))).max())

    @staticmethod
    def energy(u: np.ndarray, v: np.ndarray) -> float:
        """Mean kinetic energy ``½⟨u² + v²⟩``."""
        return 0.5 * float((np.asarray(u) ** 2 + np.asarray(v) ** 2).mean())

    @staticmethod
    def enstrophy(w: np.ndarray) -> float:
        """``½⟨ω²⟩``."""
        return 0.5 * float((np.asarray(w) ** 2).mean())

    def smooth(self, a: np.ndarray, width: float) -> np.ndarray:
        """Periodic Gaussian mollification of a field (standard deviation ``width``), then dealiased; used to
        make discontinuous initial data (piecewise constants, sheets) representable."""
        return self.ifft(self.fft(a) * np.exp(-0.5 * width ** 2 * self.k2) * self.mask)

    # ---- time stepping -------------------------------------------------------------------------------
    def prepare(self, w: np.ndarray, tracer: np.ndarray | None = None) -> np.ndarray:
        """Spectral state ``[ω̂ (, ĉ)]`` of physical fields, dealiased."""
        fields = [w] if tracer is None else [w, tracer]
        for name, a in zip(("vorticity", "tracer"), fields):
            a = np.asarray(a)
            if a.shape != (self.n, self.n):
                raise ValueError(f"{name} must have shape ({self.n}, {self.n}), got {a.shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"initial {name} contains NaN or infinite values")
        return self.fft(np.stack(fields).astype(np.float64)) * self.mask

    def nonlinear(self, state: np.ndarray) -> np.ndarray:
        """``−u·∇q`` for every transported field q (dealiased), plus the vorticity forcing."""
        u_hat, v_hat = self.velocity_hat(state[0])
        u, v = self.ifft(u_hat), self.ifft(v_hat)
        qx, qy = self.ifft(1j * self.kx * state), self.ifft(1j * self.ky * state)
        out = -self.fft(u * qx + v * qy) * self.mask
        if self.forcing_hat is not None:
            out[0] += self.forcing_hat
        return out

    def _rates(self, state: np.ndarray) -> np.ndarray:
        return np.stack([self.nu * self.k2, self.kappa * self.k2][:len(state)])

    def rhs(self, state: np.ndarray) -> np.ndarray:
        """Full tendency (advection, forcing, diffusion) of the spectral state."""
        return self.nonlinear(state) - self._rates(state) * state

    def step(self, state: np.ndarray, dt: float) -> np.ndarray:
        """One integrating-factor RK4 step."""
        return if_rk4_step(state, dt, self._rates(state), self.nonlinear)

    def stable_dt(self, state: np.ndarray, cfl: float = 0.5) -> float:
        """Advective step ``cfl · Δx / max(|u| + |v|)`` (diffusion is integrated exactly)."""
        u_hat, v_hat = self.velocity_hat(state[0])
        speed = float((np.abs(self.ifft(u_hat)) + np.abs(self.ifft(v_hat))).max())
        return cfl * (self.length / self.n) / max(speed, 1e-12)

    def solve(self, w0: np.ndarray, times, tracer0: np.ndarray | None = None, dt: float | None = None,
              cfl: float = 0.5) -> dict[str, np.ndarray]:
        """Integrate from ``times[0]``; return ``{"u", "v", "vorticity"(, "tracer")}`` snapshots [T, n, n].

        With ``dt`` given, every output interval is split into equal steps ≤ dt; otherwise the step comes
        from ``cfl`` and the velocity at the start of each interval.
        """
        times = np.asarray(times, dtype=np.float64)
        if times.ndim != 1 or len(times) < 1 or (np.diff(times) <= 0).any():
            raise ValueError("times must be a strictly increasing 1-D array")
        state = self.prepare(w0, tracer0)
        names = ["vorticity"] + ([] if tracer0 is None else ["tracer"])
        out = {k: np.empty((len(times), self.n, self.n)) for k in ["u", "v", *names]}

        def record(j: int) -> None:
            u_hat, v_hat = self.velocity_hat(state[0])
            out["u"][j], out["v"][j] = self.ifft(u_hat), self.ifft(v_hat)
            for c, name in enumerate(names):
                out[name][j] = self.ifft(state[c])
            if not all(np.isfinite(a[j]).all() for a in out.values()):
                raise FloatingPointError(f"solution blew up before t={times[j]:g}; lower dt or cfl")

        record(0)
        for j in range(1, len(times)):
            span = times[j] - times[j - 1]
            h = dt or self.stable_dt(state, cfl)
            steps = max(1, math.ceil(span / h - 1e-9))
            for _ in range(steps):
                state = self.step(state, span / steps)
            record(j)
        return out


def taylor_green_2d(n: int, length: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``u = sin(2πx/L) cos(2πy/L)``, ``v = −cos(2πx/L) sin(2πy/L)``: a steady Euler flow that decays as
    ``exp(−2ν(2π/L)²t)`` under viscosity."""
    x = np.arange(n) * (2 * math.pi / n)
    X, Y = np.meshgrid(x, x, indexing="ij")
    return np.sin(X) * np.cos(Y), -np.cos(X) * np.sin(Y)
