"""3-D PDE data builders: the perturbed Taylor–Green vortex (``sciformer data build tgv-3d``).

Each trajectory integrates incompressible Navier–Stokes on the periodic box ``[0, 2π)³`` with
``sciformer.solvers.navier_stokes_3d`` from a Taylor–Green vortex, randomly translated and perturbed by a
random solenoidal field; trajectory 0 is the unperturbed vortex (its early energy/enstrophy follow the
solver's verified Taylor–Green behaviour). See ``datasets/tgv-3d/README.md``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sciformer.data.building import run_build
from sciformer.data.store import FieldStoreWriter
from sciformer.errors import DataError
from sciformer.solvers.navier_stokes_3d import NavierStokes3D, taylor_green


def perturbed_taylor_green(solver: NavierStokes3D, rng: np.random.Generator, perturbation: float,
                           k_perturb: tuple[float, float] = (2.0, 4.0), shift: bool = True) -> np.ndarray:
    """Taylor–Green vortex shifted by a random offset plus a random solenoidal field with
    ``perturbation`` × the vortex's energy in the shells ``k_perturb`` (wavenumbers in units of 2π/L)."""
    n = solver.n
    offset = tuple(rng.uniform(0, 2 * math.pi, 3)) if shift else (0.0, 0.0, 0.0)
    u = taylor_green(n, shift=offset, length=solver.length)
    if perturbation > 0:
        kmag = np.sqrt(solver.k2) * solver.length / (2 * math.pi)
        noise = solver.fft(rng.standard_normal((3, n, n, n))) * ((kmag >= k_perturb[0]) & (kmag <= k_perturb[1]))
        p = solver.ifft(solver.project(noise) * solver.mask)
        p *= math.sqrt(perturbation * solver.energy(u) / max(solver.energy(p), 1e-300))
        u = u + p
    return u


def build_taylor_green_3d(out: Path, trajectories: int = 8, resolution: int = 32, seed: int = 0, *,
                          nu: float = 0.01, t_end: float = 5.0, snapshots: int = 11, perturbation: float = 0.1,
                          cfl: float = 0.5, overwrite: bool = False, workers: int | None = None) -> Path:
    """Build a store of ``trajectories`` perturbed 3-D Taylor–Green flows on a ``resolution``³ grid.

    Options: ``nu`` (viscosity; Re = 1/ν with U = 1, L = 1), ``t_end``, ``snapshots`` (uniform in
    [0, t_end]), ``perturbation`` (energy of the random part relative to the vortex), ``cfl``. Trajectory i
    uses ``numpy.random.default_rng([seed, i])``; trajectory 0 is the unperturbed, unshifted vortex.
    Resumable: finished trajectories are kept when a build is interrupted and rerun. ``workers``: processes
    (default: all usable cores).
    """
    if resolution > 64:
        raise DataError(f"tgv-3d: resolution {resolution} is beyond what this builder is sized for (≤ 64)")
    if trajectories < 1 or snapshots < 2:
        raise DataError("tgv-3d needs at least 1 trajectory and 2 snapshots")
    out = Path(out)
    times = np.linspace(0.0, t_end, snapshots)
    coords = {a: np.arange(resolution) * 2 * math.pi / resolution for a in ("x", "y", "z")}
    attrs = {
        "pde": "incompressible Navier-Stokes 3D (perturbed Taylor-Green vortex)",
        "boundary_conditions": {"x": "periodic", "y": "periodic", "z": "periodic"},
        "domain": {"x": [0.0, 2 * math.pi], "y": [0.0, 2 * math.pi], "z": [0.0, 2 * math.pi]},
        "generator": {"name": "tgv-3d", "solver": "sciformer.solvers.navier_stokes_3d (pseudo-spectral, 2/3 "
                      "dealiased, integrating-factor RK4)", "nu": nu, "reynolds": 1 / nu if nu else None,
                      "t_end": t_end, "snapshots": snapshots, "perturbation": perturbation, "cfl": cfl,
                      "seed": seed, "resolution": resolution},
    }
    variables = {name: {"role": "state", "units": "1", "long_name": f"velocity {axis} component "
                        "(units of the vortex amplitude U0)"} for name, axis in zip("uvw", "xyz")}
    writer = FieldStoreWriter(out, variables, trajectories, times, coords, attrs, overwrite=overwrite)
    params = {"resolution": resolution, "seed": seed, "nu": nu, "times": times, "perturbation": perturbation,
              "cfl": cfl}
    return run_build(writer, _trajectory, params, f"tgv-3d {resolution}³", workers)


def _trajectory(i: int, resolution: int, seed: int, nu: float, times: np.ndarray, perturbation: float,
                cfl: float) -> dict[str, np.ndarray]:
    """Trajectory ``i`` of tgv-3d (module level so worker processes can run it)."""
    solver = NavierStokes3D(resolution, nu=nu)
    rng = np.random.default_rng([seed, i])
    u0 = taylor_green(resolution) if i == 0 else perturbed_taylor_green(solver, rng, perturbation)
    _, snaps = solver.solve(u0, times, cfl=cfl)
    return {name: snaps[:, c].astype(np.float32) for c, name in enumerate("uvw")}
