"""Tiny analytic field stores for pipeline tests (periodic heat equation: known, learnable dynamics)."""

import numpy as np

from sciformer.data.store import write_store


def heat_store(path, variables, n, seed, nu=0.02):
    """Periodic heat-equation solutions: Fourier modes decaying as exp(−4π²ν|k|²t); one array per variable."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, 16, endpoint=False)
    time = np.linspace(0, 1, 5)
    X, Y = np.meshgrid(x, x, indexing="ij")
    data = {}
    for name in variables:
        fields = np.zeros((n, len(time), 16, 16))
        for kx, ky in [(1, 0), (0, 1), (1, 1), (2, 1)]:
            a = rng.normal(size=(n, 1, 1, 1))
            decay = np.exp(-4 * np.pi**2 * nu * (kx**2 + ky**2) * time)[None, :, None, None]
            fields += a * decay * np.sin(2 * np.pi * (kx * X + ky * Y))[None, None]
        data[name] = fields
    meta = {v: {"role": "state", "units": "1"} for v in variables}
    return write_store(path, data, meta, time, {"x": x, "y": x},
                       {"pde": "heat", "boundary_conditions": {"x": "periodic", "y": "periodic"}})


def build_heat(out, trajectories, resolution, seed, variables=("u", "v")):
    """A `sciformer data build`-style builder of heat stores (test stand-in for the PDE builders)."""
    return heat_store(out, list(variables), trajectories, seed, nu=0.02 + 0.01 * (seed % 3))


def build_heat_downstream(out, trajectories, resolution, seed):
    return build_heat(out, trajectories, resolution, seed, variables=("u", "w"))
