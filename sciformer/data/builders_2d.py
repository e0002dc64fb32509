"""2-D PDE data builders (``sciformer data build NAME``): Navier–Stokes families, wave, Allen–Cahn, Poisson.

Every builder writes the canonical field store through :func:`sciformer.data.building.run_build` (process
pool, progress bar, resumable, atomic). Trajectory ``i`` is generated from ``numpy.random.default_rng([seed,
i])`` only, so a store does not depend on the number of workers or on interruptions. Initial-condition
families follow the kinds of Poseidon's data sets (NS-Sines, NS-Gauss, NS-PwC, NS-SL, NS-SVS,
NS-Tracer-PwC, FNS-KF, Wave-Gauss, Wave-Layer, ACE, Poisson-Gauss); their exact formulas and parameters are
ours (the anchors do not give Poseidon's) and are written in each store's ``generator`` attribute and data
card (``datasets/<name>/README.md``).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from sciformer.data.building import run_build
from sciformer.data.store import FieldStoreWriter
from sciformer.errors import DataError
from sciformer.solvers.allen_cahn_2d import AllenCahn2D
from sciformer.solvers.navier_stokes_2d import NavierStokes2D
from sciformer.solvers.poisson_2d import grid as dirichlet_grid
from sciformer.solvers.poisson_2d import solve_poisson
from sciformer.solvers.wave_2d import Wave2D

PERIODIC = {"x": "periodic", "y": "periodic"}
UNIT_SQUARE = {"x": [0.0, 1.0], "y": [0.0, 1.0]}
NS_FAMILIES = ("sines", "gauss", "pwc", "shear-layer", "vortex-sheet")


# ---- shared helpers --------------------------------------------------------------------------------
def _periodic_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(n) / n
    return np.meshgrid(x, x, indexing="ij")


def _wrap(d: np.ndarray) -> np.ndarray:
    """Minimum-image distance on the unit torus."""
    return d - np.round(d)


def _gaussians(X: np.ndarray, Y: np.ndarray, centres, widths, amplitudes, periodic: bool = True) -> np.ndarray:
    out = np.zeros_like(X)
    for (cx, cy), s, a in zip(centres, widths, amplitudes):
        dx, dy = (_wrap(X - cx), _wrap(Y - cy)) if periodic else (X - cx, Y - cy)
        out += a * np.exp(-(dx * dx + dy * dy) / (2 * s * s))
    return out


def _random_sines(rng: np.random.Generator, X: np.ndarray, Y: np.ndarray, modes: int, decay: float) -> np.ndarray:
    """``Σ_{i,j=1..modes} a_ij (i²+j²)^(−decay/2) sin(2πix + φ_ij) sin(2πjy + θ_ij)``, a_ij ~ U[−1, 1].

    Terms with i or j ≥ n/3 (not resolved on the n-point grid) are left out; their random numbers are still
    drawn, so the resolved terms do not depend on the resolution."""
    out = np.zeros_like(X)
    for i in range(1, modes + 1):
        for j in range(1, modes + 1):
            a, phi, theta = rng.uniform(-1, 1), rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)
            if max(i, j) >= X.shape[0] / 3:
                continue
            out += a * (i * i + j * j) ** (-decay / 2) * np.sin(2 * math.pi * i * X + phi) * \
                np.sin(2 * math.pi * j * Y + theta)
    return out


def _checkerboard(rng: np.random.Generator, X: np.ndarray, Y: np.ndarray, cells: int, values) -> np.ndarray:
    """Piecewise constant on a cells×cells grid of squares, one value per square from ``values(size)``."""
    table = values(size=(cells, cells))
    return table[np.minimum((X * cells).astype(int), cells - 1), np.minimum((Y * cells).astype(int), cells - 1)]


def _check(name: str, trajectories: int, resolution: int, snapshots: int | None = None, low: int = 8) -> None:
    if trajectories < 1:
        raise DataError(f"{name}: --trajectories must be ≥ 1, got {trajectories}")
    if resolution < low or resolution % 2:
        raise DataError(f"{name}: --resolution must be an even number ≥ {low}, got {resolution}")
    if snapshots is not None and snapshots < 2:
        raise DataError(f"{name}: option snapshots must be ≥ 2, got {snapshots}")


def _attrs(name: str, pde: str, solver: str, bcs: dict, generator: dict[str, Any]) -> dict[str, Any]:
    return {"pde": pde, "boundary_conditions": bcs, "domain": UNIT_SQUARE,
            "generator": {"name": name, "solver": solver, **generator}}


# ---- incompressible Navier–Stokes ------------------------------------------------------------------
def ns_initial_vorticity(family: str, solver: NavierStokes2D, rng: np.random.Generator, p: dict) -> np.ndarray:
    """Initial vorticity of one NS family (formulas in ``datasets/ns-2d/README.md``)."""
    n = solver.n
    X, Y = _periodic_grid(n)
    if family == "sines":
        u = _random_sines(rng, X, Y, p["modes"], 2.0)
        v = _random_sines(rng, X, Y, p["modes"], 2.0)
        w = solver.vorticity(u, v)
    elif family == "gauss":
        m = p["gaussians"]
        w = _gaussians(X, Y, rng.uniform(0, 1, (m, 2)), rng.uniform(*p["width"], m), rng.uniform(-1, 1, m))
    elif family == "pwc":
        cells = int(rng.integers(p["cells"][0], p["cells"][1] + 1))
        u = _checkerboard(rng, X, Y, cells, lambda size: rng.uniform(-1, 1, size))
        v = _checkerboard(rng, X, Y, cells, lambda size: rng.uniform(-1, 1, size))
        w = solver.vorticity(solver.smooth(u, p["smoothing"]), solver.smooth(v, p["smoothing"]))
    elif family == "shear-layer":
        rho = p["thickness"]
        u = np.where(Y <= 0.5, np.tanh((Y - 0.25) / rho), np.tanh((0.75 - Y) / rho))
        k = np.arange(1, p["modes"] + 1)
        a, phase = rng.uniform(-1, 1, len(k)) / k, rng.uniform(0, 2 * math.pi, len(k))
        sigma = p["perturbation"] * (a[:, None] * np.sin(2 * math.pi * k[:, None] * X[:, 0] + phase[:, None])).sum(0)
        v = p["delta"] * np.sin(2 * math.pi * (X + sigma[:, None]))
        w = solver.vorticity(u, v)
    elif family == "vortex-sheet":
        k = np.arange(1, p["modes"] + 1)
        a, phase = rng.uniform(-1, 1, len(k)) / k, rng.uniform(0, 2 * math.pi, len(k))
        eta = p["perturbation"] * (a[:, None] * np.sin(2 * math.pi * k[:, None] * X[:, 0] + phase[:, None])).sum(0)
        d = _wrap(Y - 0.5 - eta[:, None])
        s = p["smoothing"]
        w = np.exp(-d * d / (2 * s * s)) / (math.sqrt(2 * math.pi) * s)  # unit velocity jump across the sheet
    else:
        raise DataError(f"unknown NS family {family!r}; expected one of {NS_FAMILIES}")
    w = solver.ifft(solver.fft(w - w.mean()) * solver.mask)
    if p.get("speed") and family in ("sines", "gauss", "pwc"):
        u, v = solver.velocity(w)
        w *= p["speed"] / math.sqrt(float((u * u + v * v).mean()))
    return w


def _ns_trajectory(i: int, resolution: int, seed: int, family: str, nu: float, times: np.ndarray, cfl: float,
                   family_params: dict, tracer: dict | None, forcing: float | None) -> dict[str, np.ndarray]:
    """Trajectory ``i`` of an NS store (module level so worker processes can run it)."""
    rng = np.random.default_rng([seed, i])
    f = _kolmogorov_forcing(resolution, forcing) if forcing else None
    solver = NavierStokes2D(resolution, nu=nu, forcing=f, kappa=tracer["kappa"] if tracer else None)
    w0 = ns_initial_vorticity(family, solver, rng, family_params)
    c0 = None
    if tracer:
        X, Y = _periodic_grid(resolution)
        cells = int(rng.integers(tracer["cells"][0], tracer["cells"][1] + 1))
        mask = _checkerboard(rng, X, Y, cells, lambda size: (rng.uniform(0, 1, size) < tracer["fill"]).astype(float))
        c0 = solver.smooth(mask, tracer["smoothing"])
    out = solver.solve(w0, times, tracer0=c0, cfl=cfl)
    fields = {"u": out["u"], "v": out["v"]}
    if tracer:
        fields["tracer"] = out["tracer"]
    if forcing:
        fields["forcing"] = f
    return {k: a.astype(np.float32) for k, a in fields.items()}


def _kolmogorov_forcing(n: int, amplitude: float) -> np.ndarray:
    X, Y = _periodic_grid(n)
    return amplitude * np.sin(2 * math.pi * (X + Y))


FAMILY_DEFAULTS = {
    "sines": {"modes": 10, "speed": 0.5},
    "gauss": {"gaussians": 20, "width": [0.03, 0.1], "speed": 0.5},
    "pwc": {"cells": [2, 6], "smoothing": 0.02, "speed": 0.5},
    "shear-layer": {"thickness": 1 / 30, "delta": 0.05, "perturbation": 0.02, "modes": 6},
    "vortex-sheet": {"smoothing": 0.02, "perturbation": 0.05, "modes": 4},
}


def build_ns(out: Path, trajectories: int = 64, resolution: int = 64, seed: int = 0, *, family: str = "sines",
             name: str | None = None, nu: float = 1e-3, t_end: float = 1.0, snapshots: int = 21, cfl: float = 0.5,
             tracer: bool = False, kappa: float | None = None, forcing: float | None = None,
             overwrite: bool = False, workers: int | None = None, **family_options) -> Path:
    """2-D incompressible Navier–Stokes store (u, v [+ tracer] [+ forcing]) for one initial-condition family.

    Options: ``nu``, ``t_end``, ``snapshots`` (uniform in [0, t_end]), ``cfl``, ``tracer`` (add a passive
    tracer, diffusivity ``kappa`` = ν by default), ``forcing`` (amplitude of the Kolmogorov vorticity forcing
    ``F sin(2π(x+y))``, stored as the static field ``forcing``), ``workers``, ``overwrite``, and the family's
    own parameters (:data:`FAMILY_DEFAULTS`).
    """
    name = name or f"ns-{family}"
    _check(name, trajectories, resolution, snapshots)
    if family not in FAMILY_DEFAULTS:
        raise DataError(f"{name}: unknown family {family!r}; expected one of {NS_FAMILIES}")
    unknown = set(family_options) - set(FAMILY_DEFAULTS[family])
    if unknown:
        raise DataError(f"{name}: unknown option(s) {sorted(unknown)}; this builder takes nu, t_end, snapshots, cfl, "
                        f"tracer, kappa, forcing, workers, overwrite and {sorted(FAMILY_DEFAULTS[family])}")
    params = {**FAMILY_DEFAULTS[family], **family_options}
    tracer_params = {"kappa": nu if kappa is None else kappa, "cells": [2, 6], "fill": 0.25,
                     "smoothing": params.get("smoothing", 0.01)} if tracer else None
    times = np.linspace(0.0, t_end, snapshots)
    x = np.arange(resolution) / resolution
    variables = {"u": {"role": "state", "units": "1", "long_name": "velocity x component"},
                 "v": {"role": "state", "units": "1", "long_name": "velocity y component"}}
    if tracer:
        variables["tracer"] = {"role": "state", "units": "1", "long_name": "passive tracer concentration"}
    if forcing:
        variables["forcing"] = {"role": "forcing", "units": "1",
                                "long_name": "vorticity forcing f in dω/dt + u·∇ω = νΔω + f"}
    pde = "incompressible Navier-Stokes 2D (vorticity form)" + (", passive tracer" if tracer else "") + \
        (", Kolmogorov forcing" if forcing else "")
    attrs = _attrs(name, pde, "sciformer.solvers.navier_stokes_2d (pseudo-spectral vorticity, 2/3 dealiased, "
                   "integrating-factor RK4, CFL-adaptive per output interval)", PERIODIC,
                   {"family": family, "nu": nu, "t_end": t_end, "snapshots": snapshots, "cfl": cfl, "seed": seed,
                    "resolution": resolution, "family_parameters": params, "tracer": tracer_params,
                    "forcing": None if not forcing else f"{forcing} * sin(2*pi*(x+y))"})
    writer = FieldStoreWriter(out, variables, trajectories, times, {"x": x, "y": x}, attrs, overwrite=overwrite)
    make = {"resolution": resolution, "seed": seed, "family": family, "nu": nu, "times": times, "cfl": cfl,
            "family_params": params, "tracer": tracer_params, "forcing": forcing}
    return run_build(writer, _ns_trajectory, make, f"{name} {resolution}²", workers)


def build_ns_sines(out, trajectories=64, resolution=64, seed=0, **options):
    """NS-Sines: random sine-series velocity (10×10 modes, amplitude ∝ 1/(i²+j²)), rms speed 0.5."""
    return build_ns(out, trajectories, resolution, seed, family="sines", **options)


def build_ns_gauss(out, trajectories=64, resolution=64, seed=0, **options):
    """NS-Gauss: vorticity = sum of 20 random periodic Gaussians (widths 0.03–0.1), rms speed 0.5."""
    return build_ns(out, trajectories, resolution, seed, family="gauss", **options)


def build_ns_pwc(out, trajectories=64, resolution=64, seed=0, **options):
    """NS-PwC: velocity piecewise constant on a random 2–6² grid of squares, mollified, projected."""
    return build_ns(out, trajectories, resolution, seed, family="pwc", **options)


def build_ns_shear_layer(out, trajectories=64, resolution=64, seed=0, **options):
    """NS-SL: perturbed double shear layer ``u = ±tanh((y∓¼)/ρ)``, ``v = δ sin(2π(x + σ(x)))``."""
    return build_ns(out, trajectories, resolution, seed, family="shear-layer", name="ns-shear-layer", **options)


def build_ns_vortex_sheet(out, trajectories=64, resolution=64, seed=0, **options):
    """NS-SVS: mollified vortex sheet along a randomly perturbed line ``y = ½ + η(x)``."""
    return build_ns(out, trajectories, resolution, seed, family="vortex-sheet", name="ns-vortex-sheet", **options)


def build_ns_tracer(out, trajectories=64, resolution=64, seed=0, family="pwc", **options):
    """NS-Tracer: a passive tracer (mollified 0/1 patches) carried by an NS flow (default family pwc)."""
    return build_ns(out, trajectories, resolution, seed, family=family, name="ns-tracer", tracer=True, **options)


def build_ns_kolmogorov(out, trajectories=64, resolution=64, seed=0, family="sines", forcing=0.1, **options):
    """FNS-KF: NS with the static vorticity forcing ``0.1 sin(2π(x+y))`` (stored as ``forcing``)."""
    return build_ns(out, trajectories, resolution, seed, family=family, name="ns-kolmogorov", forcing=forcing,
                    **options)


# ---- wave equation ---------------------------------------------------------------------------------
def wave_speed(kind: str, n: int, rng: np.random.Generator, p: dict) -> np.ndarray:
    """A random wave-speed field: ``gauss`` (smooth, c = c₀(1 + ½ tanh(Σ Gaussians))) or ``layer``
    (horizontal layers of constant speed, mollified)."""
    X, Y = _periodic_grid(n)
    c0 = p["c0"]
    if kind == "gauss":
        m = p["bumps"]
        g = _gaussians(X, Y, rng.uniform(0, 1, (m, 2)), rng.uniform(0.1, 0.25, m), rng.uniform(-1.5, 1.5, m))
        return c0 * (1 + 0.5 * np.tanh(g))
    layers = int(rng.integers(p["layers"][0], p["layers"][1] + 1))
    edges = np.sort(rng.uniform(0, 1, layers))
    speeds = c0 * rng.uniform(0.5, 1.5, layers)
    which = (np.searchsorted(edges, Y[0], side="right") - 1) % layers  # layer k spans [edges[k], edges[k+1])
    profile = speeds[which]
    k = np.fft.rfftfreq(n, 1.0 / n) * 2 * math.pi
    profile = np.fft.irfft(np.fft.rfft(profile) * np.exp(-0.5 * (p["smoothing"] * k) ** 2), n)
    return np.broadcast_to(profile, (n, n)).copy()


def _wave_trajectory(i: int, resolution: int, seed: int, kind: str, times: np.ndarray, cfl: float,
                     params: dict) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, i])
    c = wave_speed(kind, resolution, rng, params)
    X, Y = _periodic_grid(resolution)
    m = int(rng.integers(params["pulses"][0], params["pulses"][1] + 1))
    u0 = _gaussians(X, Y, rng.uniform(0, 1, (m, 2)), rng.uniform(*params["width"], m), rng.uniform(-1, 1, m))
    u = Wave2D(c).solve(u0, times, cfl=cfl)
    return {"u": u.astype(np.float32), "c": c.astype(np.float32)}


WAVE_DEFAULTS = {"c0": 1.0, "bumps": 4, "layers": [3, 6], "smoothing": 0.01, "pulses": [1, 4], "width": [0.03, 0.06]}


def _build_wave(out, trajectories, resolution, seed, kind, t_end=0.5, snapshots=21, cfl=0.5, overwrite=False,
                workers=None, **options) -> Path:
    name = f"wave-{kind}"
    _check(name, trajectories, resolution, snapshots)
    unknown = set(options) - set(WAVE_DEFAULTS)
    if unknown:
        raise DataError(f"{name}: unknown option(s) {sorted(unknown)}; this builder takes t_end, snapshots, cfl, "
                        f"workers, overwrite and {sorted(WAVE_DEFAULTS)}")
    params = {**WAVE_DEFAULTS, **options}
    times = np.linspace(0.0, t_end, snapshots)
    x = np.arange(resolution) / resolution
    variables = {"u": {"role": "state", "units": "1", "long_name": "displacement"},
                 "c": {"role": "coefficient", "units": "1", "long_name": "wave speed (domain lengths per time unit)"}}
    attrs = _attrs(name, "wave equation 2D u_tt = c(x,y)^2 Laplace(u)", "sciformer.solvers.wave_2d (Fourier "
                   "spectral Laplacian, leapfrog, energy-conserving)", PERIODIC,
                   {"speed": kind, "t_end": t_end, "snapshots": snapshots, "cfl": cfl, "seed": seed,
                    "resolution": resolution, "parameters": params, "initial_velocity": 0.0})
    writer = FieldStoreWriter(out, variables, trajectories, times, {"x": x, "y": x}, attrs, overwrite=overwrite)
    make = {"resolution": resolution, "seed": seed, "kind": kind, "times": times, "cfl": cfl, "params": params}
    return run_build(writer, _wave_trajectory, make, f"{name} {resolution}²", workers)


def build_wave_gauss(out, trajectories=64, resolution=64, seed=0, **options):
    """Wave-Gauss: Gaussian initial displacements in a smooth random medium."""
    return _build_wave(out, trajectories, resolution, seed, "gauss", **options)


def build_wave_layer(out, trajectories=64, resolution=64, seed=0, **options):
    """Wave-Layer: Gaussian initial displacements in a layered medium (3–6 horizontal layers)."""
    return _build_wave(out, trajectories, resolution, seed, "layer", **options)


# ---- Allen–Cahn ------------------------------------------------------------------------------------
def _allen_cahn_trajectory(i: int, resolution: int, seed: int, eps: float, times: np.ndarray, modes: int,
                           decay: list[float]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, i])
    X, Y = _periodic_grid(resolution)
    u0 = _random_sines(rng, X, Y, modes, rng.uniform(*decay))
    u0 /= np.abs(u0).max()
    return {"u": AllenCahn2D(resolution, eps).solve(u0, times).astype(np.float32)}


def build_allen_cahn(out: Path, trajectories: int = 64, resolution: int = 64, seed: int = 0, *, eps: float = 40.0,
                     t_end: float = 0.01, snapshots: int = 21, modes: int = 8, decay: tuple = (1.4, 2.0),
                     overwrite: bool = False, workers: int | None = None) -> Path:
    """Allen–Cahn ``u_t = Δu + ε²(u − u³)`` from random sine series scaled to max |u₀| = 1.

    Options: ``eps`` (reaction rate; interface width √2/ε, default 40 ≈ 2 cells at 64²), ``t_end``,
    ``snapshots``, ``modes`` (i, j ≤ modes), ``decay`` (amplitudes ∝ (i²+j²)^(−r/2), r ~ U[decay]).
    """
    _check("allen-cahn", trajectories, resolution, snapshots)
    if math.sqrt(2) / eps < 1.5 / resolution:
        warnings.warn(f"allen-cahn: the interface width √2/ε = {math.sqrt(2) / eps:.3g} is under 1.5 grid cells at "
                      f"{resolution}²; values will overshoot ±1 (Gibbs): lower eps or raise the resolution", stacklevel=2)
    times = np.linspace(0.0, t_end, snapshots)
    x = np.arange(resolution) / resolution
    variables = {"u": {"role": "state", "units": "1", "long_name": "phase field (±1 pure phases)"}}
    attrs = _attrs("allen-cahn", "Allen-Cahn 2D u_t = Laplace(u) + eps^2 (u - u^3)",
                   "sciformer.solvers.allen_cahn_2d (Strang splitting: exact Fourier diffusion, exact reaction; "
                   "dt = 0.1/eps^2)", PERIODIC,
                   {"eps": eps, "t_end": t_end, "snapshots": snapshots, "modes": modes, "decay": list(decay),
                    "seed": seed, "resolution": resolution})
    writer = FieldStoreWriter(out, variables, trajectories, times, {"x": x, "y": x}, attrs, overwrite=overwrite)
    make = {"resolution": resolution, "seed": seed, "eps": eps, "times": times, "modes": modes, "decay": list(decay)}
    return run_build(writer, _allen_cahn_trajectory, make, f"allen-cahn {resolution}²", workers)


# ---- Poisson ---------------------------------------------------------------------------------------
def _poisson_sample(i: int, resolution: int, seed: int, sources: list[int], width: list[float],
                    amplitude: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, i])
    x = dirichlet_grid(resolution)
    X, Y = np.meshgrid(x, x, indexing="ij")
    m = int(rng.integers(sources[0], sources[1] + 1))
    f = _gaussians(X, Y, rng.uniform(0.1, 0.9, (m, 2)), rng.uniform(*width, m),
                   amplitude * rng.uniform(-1, 1, m), periodic=False)
    return {"source": f.astype(np.float32), "solution": solve_poisson(f).astype(np.float32)}


def build_poisson_gauss(out: Path, trajectories: int = 256, resolution: int = 64, seed: int = 0, *,
                        sources: tuple = (1, 8), width: tuple = (0.03, 0.1), amplitude: float = 10.0,
                        overwrite: bool = False, workers: int | None = None) -> Path:
    """Steady Poisson ``−Δu = f``, ``u = 0`` on the boundary of the unit square, f = sum of Gaussians.

    Options: ``sources`` (number of Gaussians, uniform in the range), ``width`` (σ range), ``amplitude``
    (peak values uniform in ±amplitude). ``resolution`` counts the nodes including both boundaries.
    """
    _check("poisson-gauss", trajectories, resolution, low=4)
    x = dirichlet_grid(resolution)
    variables = {"source": {"role": "source", "units": "1", "long_name": "right-hand side f of -Laplace(u) = f"},
                 "solution": {"role": "solution", "units": "1", "long_name": "solution u (u = 0 on the boundary)"}}
    attrs = _attrs("poisson-gauss", "Poisson 2D -Laplace(u) = f, u = 0 on the boundary",
                   "sciformer.solvers.poisson_2d (5-point finite differences, fast sine transform; exact "
                   "discrete solve)", {"x": "dirichlet", "y": "dirichlet"},
                   {"sources": list(sources), "width": list(width), "amplitude": amplitude, "seed": seed,
                    "resolution": resolution, "grid": "nodes j/(n-1), boundaries included"})
    writer = FieldStoreWriter(out, variables, trajectories, None, {"x": x, "y": x}, attrs, overwrite=overwrite)
    make = {"resolution": resolution, "seed": seed, "sources": list(sources), "width": list(width),
            "amplitude": amplitude}
    return run_build(writer, _poisson_sample, make, f"poisson-gauss {resolution}²", workers)
