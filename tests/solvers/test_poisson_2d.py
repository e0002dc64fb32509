"""2-D Dirichlet Poisson (5-point FD, fast sine transform): DST-I against its definition, a discrete
manufactured solution to round-off, and second-order convergence to an analytic solution."""

import math

import numpy as np
import pytest

from sciformer.solvers.poisson_2d import dst1, grid, laplacian_5point, solve_poisson


def test_dst1_matches_its_definition():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 7))
    m = a.shape[1]
    j, p = np.meshgrid(np.arange(1, m + 1), np.arange(1, m + 1), indexing="ij")
    ref = a @ np.sin(math.pi * j * p / (m + 1))
    np.testing.assert_allclose(dst1(a, 1), ref, atol=1e-13)
    np.testing.assert_allclose(dst1(dst1(a, 1), 1) * 2 / (m + 1), a, atol=1e-13)  # its own inverse


@pytest.mark.parametrize("n", [5, 16, 33])
def test_discrete_manufactured_solution_to_round_off(n):
    rng = np.random.default_rng(n)
    u = np.zeros((n, n))
    u[1:-1, 1:-1] = rng.standard_normal((n - 2, n - 2))
    f = -laplacian_5point(u)  # the stencil applied directly, independent of the sine transform
    np.testing.assert_allclose(solve_poisson(f), u, atol=1e-11 * np.abs(u).max())


def test_second_order_convergence_to_an_analytic_solution():
    """u = sin(πx) y(1−y) vanishes on the boundary; −Δu = sin(πx)(π² y(1−y) + 2)."""
    errs = []
    for n in (17, 33, 65):
        x = grid(n)
        X, Y = np.meshgrid(x, x, indexing="ij")
        exact = np.sin(math.pi * X) * Y * (1 - Y)
        errs.append(np.abs(solve_poisson(np.sin(math.pi * X) * (math.pi ** 2 * Y * (1 - Y) + 2)) - exact).max())
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert errs[-1] < 1e-4 and (rates > 1.9).all() and (rates < 2.1).all(), (errs, rates)


def test_bad_input():
    with pytest.raises(ValueError, match="square"):
        solve_poisson(np.zeros((4, 5)))
    with pytest.raises(ValueError, match="NaN"):
        solve_poisson(np.full((4, 4), np.nan))
