"""Integrating-factor RK4 shared by the spectral solvers.

For ``dû/dt = N(û) − r ⊙ û`` the linear part is integrated exactly (``exp(−r t)``) and the nonlinear part with
classic RK4, so stiff diffusion does not limit the step; with ``r = 0`` it is plain RK4.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def if_rk4_step(state: np.ndarray, dt: float, rates: np.ndarray | float,
                nonlinear: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """One step of size ``dt`` for ``dû/dt = nonlinear(û) − rates ⊙ û`` (``rates`` broadcast to ``state``)."""
    e_half = np.exp(-0.5 * dt * np.asarray(rates))
    e_full = e_half * e_half
    k1 = nonlinear(state)
    k2 = nonlinear(e_half * (state + 0.5 * dt * k1))
    k3 = nonlinear(e_half * state + 0.5 * dt * k2)
    k4 = nonlinear(e_full * state + dt * e_half * k3)
    return e_full * state + dt / 6 * (e_full * k1 + 2 * e_half * (k2 + k3) + k4)
