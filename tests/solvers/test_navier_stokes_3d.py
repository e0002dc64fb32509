"""3-D pseudo-spectral Navier–Stokes: Taylor–Green initial state, tendency and short-time series; invariants."""

import math

import numpy as np
import pytest

from sciformer.solvers.navier_stokes_3d import NavierStokes3D, taylor_green


def _grid(n):
    x = np.arange(n) * 2 * math.pi / n
    return np.meshgrid(x, x, x, indexing="ij")


def _random_field(solver, seed=0, kmax=4):
    """A random band-limited solenoidal field (dealiased), energy ~0.1."""
    rng = np.random.default_rng(seed)
    u_hat = solver.fft(rng.standard_normal((3, solver.n, solver.n, solver.n)))
    u_hat = u_hat * (np.sqrt(solver.k2) <= kmax)
    u = solver.ifft(solver.project(u_hat) * solver.mask)
    return u * math.sqrt(0.1 / solver.energy(u))


def test_taylor_green_initial_state():
    s = NavierStokes3D(16, nu=0.0)
    u0 = taylor_green(16)
    assert s.energy(u0) == pytest.approx(1 / 8, rel=1e-12)
    assert s.enstrophy(u0) == pytest.approx(3 / 8, rel=1e-12)  # ½⟨|ω|²⟩ with ω = (−cxsysz, −sxcysz, 2sxsycz)
    assert s.divergence(u0) < 1e-12
    assert abs(s.helicity(u0)) < 1e-12


def test_initial_tendency_matches_hand_derivation():
    """u·∇u = ¼(sin2x(1+cos2z), sin2y(1+cos2z), 0); its projection gives ∂u/∂t = −P(u·∇u) =
    −⅛(sin2x cos2z, sin2y cos2z, −sin2z(cos2x + cos2y)) — independent of the solver's rotational form."""
    n = 16
    s = NavierStokes3D(n, nu=0.0)
    X, Y, Z = _grid(n)
    expected = -np.stack([np.sin(2 * X) * np.cos(2 * Z), np.sin(2 * Y) * np.cos(2 * Z),
                          -np.sin(2 * Z) * (np.cos(2 * X) + np.cos(2 * Y))]) / 8
    got = s.ifft(s.rhs(s.prepare(taylor_green(n))))
    np.testing.assert_allclose(got, expected, atol=1e-13)
    # with viscosity the tendency adds −ν|k|²u = −3ν u for the |k|² = 3 Taylor–Green mode
    sv = NavierStokes3D(n, nu=0.1)
    np.testing.assert_allclose(sv.ifft(sv.rhs(sv.prepare(taylor_green(n)))), expected - 0.3 * taylor_green(n),
                               atol=1e-13)


def test_short_time_inviscid_enstrophy_series():
    """From the tendency above: the |k|²=8 modes hold t²/128 of energy, taken from the |k|²=3 mode, so
    Z(t) = 3·(1/8 − t²/128) + 8·t²/128 = 3/8 + 5t²/128 + O(t⁴) (Z is even in t: −u₀ is a shifted u₀)."""
    s = NavierStokes3D(16, nu=0.0)
    for t in (0.1, 0.2):
        _, snaps = s.solve(taylor_green(16), [0.0, t], dt=0.01)
        ratio = (s.enstrophy(snaps[-1]) - 3 / 8) / (5 * t ** 2 / 128)
        assert ratio == pytest.approx(1.0, abs=0.1 * t ** 2)  # next term is O(t²) relative
        assert s.energy(snaps[-1]) == pytest.approx(1 / 8, rel=1e-12)


def test_viscous_energy_budget_and_early_decay():
    """dE/dt = −2νZ (exact for the Galerkin system); at t → 0 the decay rate is 2ν·3/8."""
    nu = 0.02
    s = NavierStokes3D(16, nu=nu)
    times = np.linspace(0.0, 1.0, 41)
    _, snaps = s.solve(taylor_green(16), times, dt=0.0125)
    E = np.array([s.energy(u) for u in snaps])
    Z = np.array([s.enstrophy(u) for u in snaps])
    # Simpson's rule on the budget over the whole interval
    dt = times[1] - times[0]
    integral = dt / 3 * (Z[0] + Z[-1] + 4 * Z[1:-1:2].sum() + 2 * Z[2:-1:2].sum())
    assert E[-1] - E[0] == pytest.approx(-2 * nu * integral, rel=1e-6)
    rate0 = (E[1] - E[0]) / dt
    assert rate0 == pytest.approx(-2 * nu * 3 / 8, rel=0.02)
    assert max(s.divergence(u) for u in snaps) < 1e-10


def test_inviscid_random_field_conserves_energy_and_helicity():
    s = NavierStokes3D(16, nu=0.0)
    u0 = _random_field(s, seed=1)
    E0, H0 = s.energy(u0), s.helicity(u0)
    _, snaps = s.solve(u0, [0.0, 0.5, 1.0], cfl=0.25)
    for u in snaps[1:]:
        assert s.energy(u) == pytest.approx(E0, rel=1e-6)
        assert s.helicity(u) == pytest.approx(H0, rel=1e-4, abs=1e-7)
        assert s.divergence(u) < 1e-10
    assert np.abs(snaps[-1] - u0).max() > 1e-2  # the field did evolve


def test_rk4_fourth_order_in_time():
    s = NavierStokes3D(16, nu=0.01)
    u0 = _random_field(s, seed=2)
    ref = s.solve(u0, [0.0, 0.4], dt=0.4 / 64)[1][-1]
    errs = [np.abs(s.solve(u0, [0.0, 0.4], dt=0.4 / m)[1][-1] - ref).max() for m in (4, 8)]
    order = math.log2(errs[0] / errs[1])
    assert 3.5 < order < 4.6


def test_dealiasing_keeps_the_state_band_limited():
    s = NavierStokes3D(16, nu=0.0)
    _, snaps = s.solve(_random_field(s, seed=3, kmax=5), [0.0, 0.3], cfl=0.25)
    u_hat = s.fft(snaps[-1])
    assert np.abs(u_hat[:, ~s.mask]).max() < 1e-10 * np.abs(u_hat).max()


def test_bad_input():
    with pytest.raises(ValueError, match="even"):
        NavierStokes3D(15)
    s = NavierStokes3D(8)
    with pytest.raises(ValueError, match="shape"):
        s.solve(np.zeros((3, 8, 8, 4)), [0, 1])
    u = taylor_green(8)
    u[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        s.solve(u, [0, 1])
    with pytest.raises(ValueError, match="increasing"):
        s.solve(taylor_green(8), [0, 1, 1])
