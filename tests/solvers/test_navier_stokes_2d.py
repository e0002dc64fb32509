"""2-D pseudo-spectral vorticity Navier–Stokes: Taylor–Green decay, laminar Kolmogorov flow, invariants,
tracer transport, RK4 order and spectral convergence under refinement."""

import math

import numpy as np
import pytest

from sciformer.solvers.navier_stokes_2d import NavierStokes2D, taylor_green_2d


def _random_vorticity(s, seed=0, kmax=5, rms=2.0):
    """A random band-limited vorticity (|k| ≤ kmax in units of 2π), dealiased."""
    rng = np.random.default_rng(seed)
    w = s.ifft(s.fft(rng.standard_normal((s.n, s.n))) * s.mask * (s.k2 <= (2 * math.pi * kmax) ** 2) * (s.k2 > 0))
    return w * rms / w.std()


def test_taylor_green_decays_at_the_analytic_rate():
    n, nu = 32, 0.01
    s = NavierStokes2D(n, nu=nu)
    u0, v0 = taylor_green_2d(n)
    w0 = s.vorticity(u0, v0)
    np.testing.assert_allclose(w0, 2 * (2 * math.pi) * np.sin(2 * math.pi * np.arange(n) / n)[:, None]
                               * np.sin(2 * math.pi * np.arange(n) / n)[None, :], atol=1e-12)
    # the advection term vanishes for Taylor-Green: the tendency is exactly the viscous one
    np.testing.assert_allclose(s.ifft(s.rhs(s.prepare(w0))[0]), -nu * 2 * (2 * math.pi) ** 2 * w0, atol=1e-11)
    times = np.linspace(0, 2, 5)
    out = s.solve(w0, times)
    for j, t in enumerate(times):
        decay = math.exp(-2 * nu * (2 * math.pi) ** 2 * t)
        np.testing.assert_allclose(out["u"][j], u0 * decay, atol=1e-12)
        np.testing.assert_allclose(out["v"][j], v0 * decay, atol=1e-12)
    assert out["u"][-1].std() < 0.3 * u0.std()  # the decay is real (not a no-op)


def test_laminar_kolmogorov_flow_from_rest():
    """ω = F/(ν|k|²)(1 − e^{−ν|k|²t}) sin(2π(x+y)) solves the forced problem exactly (u·∇ω = 0 for one mode)."""
    n, nu, F = 32, 0.01, 0.1
    x = np.arange(n) / n
    f = F * np.sin(2 * math.pi * (x[:, None] + x[None, :]))
    s = NavierStokes2D(n, nu=nu, forcing=f)
    times = np.linspace(0, 2, 5)
    out = s.solve(np.zeros((n, n)), times, dt=0.01)
    lam = nu * 8 * math.pi ** 2
    for j, t in enumerate(times):
        np.testing.assert_allclose(out["vorticity"][j], F / lam * (1 - math.exp(-lam * t)) * f / F, atol=1e-10)
    assert np.abs(out["vorticity"][-1]).max() > 0.1


def test_inviscid_energy_and_enstrophy_are_conserved_and_velocity_divergence_free():
    """The dealiased semi-discrete system conserves both exactly: what drifts is RK4's O(Δt⁴) error only."""
    s = NavierStokes2D(32, nu=0.0)
    w0 = _random_vorticity(s)
    drifts = []
    for cfl in (0.5, 0.25):
        out = s.solve(w0, [0.0, 0.5, 1.0], cfl=cfl)
        e = [s.energy(out["u"][j], out["v"][j]) for j in range(3)]
        z = [s.enstrophy(out["vorticity"][j]) for j in range(3)]
        drifts.append(max(abs(e[-1] / e[0] - 1), abs(z[-1] / z[0] - 1)))
        for j in range(3):
            assert s.divergence(out["u"][j], out["v"][j]) < 1e-12
    assert drifts[0] < 1e-5 and drifts[1] < drifts[0] / 10, drifts
    assert np.abs(out["vorticity"][-1] - w0).max() > 0.1 * np.abs(w0).max()  # the flow did evolve


def test_viscous_energy_budget_and_monotone_decay():
    """dE/dt = −2νZ for unforced periodic flow; E and Z never increase."""
    nu = 2e-3
    s = NavierStokes2D(32, nu=nu)
    times = np.linspace(0, 1, 41)
    out = s.solve(_random_vorticity(s, seed=1), times)
    e = np.array([s.energy(out["u"][j], out["v"][j]) for j in range(len(times))])
    z = np.array([s.enstrophy(out["vorticity"][j]) for j in range(len(times))])
    assert (np.diff(e) < 0).all() and (np.diff(z) < 0).all()
    dedt = np.gradient(e, times, edge_order=2)
    np.testing.assert_allclose(dedt[2:-2], -2 * nu * z[2:-2], rtol=2e-3)


def test_tracer_equal_to_vorticity_stays_equal():
    """With c₀ = ω₀, κ = ν and no forcing, c and ω obey the same equation: the tracer path matches exactly."""
    s = NavierStokes2D(32, nu=1e-3)
    w0 = _random_vorticity(s, seed=2)
    out = s.solve(w0, [0.0, 0.5], tracer0=w0)
    np.testing.assert_allclose(out["tracer"], out["vorticity"], atol=1e-12)
    assert np.abs(out["tracer"][-1] - w0).max() > 0.1


def test_rk4_is_fourth_order_in_time():
    s = NavierStokes2D(32, nu=1e-3)
    w0 = _random_vorticity(s, seed=3, rms=6.0)
    ref = s.solve(w0, [0.0, 0.4], dt=0.4 / 256)["vorticity"][-1]
    errs = [np.abs(s.solve(w0, [0.0, 0.4], dt=0.4 / m)["vorticity"][-1] - ref).max() for m in (8, 16, 32)]
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert errs[0] > 1e-8 and (rates > 3.7).all() and (rates < 4.4).all(), (errs, rates)


def test_spectral_convergence_under_grid_refinement():
    """A smooth band-limited flow on 32², 64², 128²: the coarse grids' points agree with the finest solution,
    and the error falls by orders of magnitude per refinement."""
    times = [0.0, 0.5]
    def run(n):
        s = NavierStokes2D(n, nu=5e-3)
        x = np.arange(n) / n
        X, Y = np.meshgrid(x, x, indexing="ij")
        w0 = 3 * np.sin(2 * math.pi * (X + 0.1)) * np.cos(2 * math.pi * 2 * Y) + 2 * np.cos(2 * math.pi * (3 * X - Y))
        return s.solve(w0, times, dt=0.005)["u"][-1]
    fine = run(128)
    errs = [np.abs(run(n) - fine[::128 // n, ::128 // n]).max() for n in (16, 32)]
    assert errs[1] < 1e-3 * errs[0] and errs[1] < 1e-6, errs


def test_bad_input():
    with pytest.raises(ValueError, match="even"):
        NavierStokes2D(15)
    s = NavierStokes2D(16)
    with pytest.raises(ValueError, match="shape"):
        s.solve(np.zeros((8, 8)), [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        s.solve(np.full((16, 16), np.nan), [0, 1])
    with pytest.raises(ValueError, match="increasing"):
        s.solve(np.zeros((16, 16)), [1, 0])
