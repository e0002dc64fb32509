"""2-D wave equation (spectral Laplacian, leapfrog): exact discrete energy conservation with variable c,
leapfrog's exact discrete standing wave, and the analytic plane wave (second order in Δt)."""

import math

import numpy as np
import pytest

from sciformer.solvers.wave_2d import Wave2D, plane_wave


def _smooth_speed(n, seed=0):
    rng = np.random.default_rng(seed)
    x = np.arange(n) / n
    X, Y = np.meshgrid(x, x, indexing="ij")
    g = sum(rng.uniform(-1, 1) * np.sin(2 * math.pi * (i * X + j * Y) + rng.uniform(0, 6)) for i in range(3) for j in range(3))
    return 1.0 + 0.4 * np.tanh(g)


def test_discrete_energy_is_conserved_with_variable_speed():
    n = 32
    c = _smooth_speed(n)
    s = Wave2D(c)
    x = np.arange(n) / n
    X, Y = np.meshgrid(x, x, indexing="ij")
    u0 = np.exp(-((X - 0.4) ** 2 + (Y - 0.6) ** 2) / (2 * 0.06 ** 2))
    h = 0.5 / 400
    u1 = u0 + 0.5 * h * h * c ** 2 * s.laplacian(u0)  # the solver's Taylor start with zero velocity
    e0 = s.energy(u0, u1, h)
    out, (prev, last), dt = s.solve(u0, [0.0, 0.25, 0.5], dt=h, return_last_pair=True)
    assert dt == pytest.approx(h, rel=1e-12)
    assert s.energy(prev, last, dt) == pytest.approx(e0, rel=1e-11)
    assert np.abs(out[-1] - u0).max() > 0.5  # the pulse moved away
    # the continuous energy ½∫u_t²/c² + |∇u|² is close to the discrete one
    grad2 = -float((u0 * s.laplacian(u0)).mean())
    assert e0 == pytest.approx(0.5 * grad2, rel=1e-3)


def test_standing_wave_matches_leapfrogs_exact_discrete_solution():
    """For u₀ = cos(k·x), v₀ = 0 and constant c the leapfrog solution is cos(k·x) cos(ω̃ tₙ) with
    sin(ω̃Δt/2) = c|k|Δt/2; the Taylor start equals its first level, so the match is to round-off."""
    n, c, h = 16, 1.3, 0.01
    s = Wave2D(np.full((n, n), c))
    times = np.linspace(0, 0.6, 4)
    out = s.solve(plane_wave(n, 2, 1, 0.0, 0.0), times, dt=h)
    k = 2 * math.pi * math.hypot(2, 1)
    w = 2 / h * math.asin(c * k * h / 2)
    for j, t in enumerate(times):
        np.testing.assert_allclose(out[j], plane_wave(n, 2, 1, 0.0, 0.0) * math.cos(w * t), atol=1e-11)


def test_plane_wave_converges_at_second_order():
    n, c, T = 16, 1.3, 0.5
    s = Wave2D(np.full((n, n), c))
    k = 2 * math.pi * math.hypot(1, 2)
    u0 = plane_wave(n, 1, 2, c, 0.0)
    v0 = c * k * np.sin(2 * math.pi * (np.arange(n)[:, None] + 2 * np.arange(n)[None, :]) / n)  # ∂u/∂t at t = 0
    errs = [np.abs(s.solve(u0, [0.0, T], v0=v0, dt=T / m)[-1] - plane_wave(n, 1, 2, c, T)).max() for m in (50, 100, 200)]
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert errs[-1] < 5e-3 and (rates > 1.8).all() and (rates < 2.2).all(), (errs, rates)


def test_bad_input():
    with pytest.raises(ValueError, match="positive"):
        Wave2D(np.zeros((8, 8)))
    s = Wave2D(np.ones((8, 8)))
    with pytest.raises(ValueError, match="stability"):
        s.solve(np.zeros((8, 8)), [0, 1], dt=1.0)
    with pytest.raises(ValueError, match="uniform"):
        s.solve(np.zeros((8, 8)), [0, 1, 3])
