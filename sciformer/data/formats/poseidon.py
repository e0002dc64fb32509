"""Poseidon NetCDF data sets (camlab-ethz/<name>.nc, read with h5py as Poseidon does).

Layouts (shared/anchors/poseidon.md §2.1), axes as stored:
- ``velocity`` [N, T, C, X, Y]: C=3 → u, v, tracer (NS-Sines, NS-Gauss, NS-PwC, ...); C=2 → u, v (NS-SL).
- ``data`` [N, T, 5, X, Y] → rho, u, v, p, E (CE-RP, CE-CRP, CE-KH, CE-Gauss, CE-RPUI).
- ``solution`` [N, T, C, X, Y]: channels by data set (CE-RM: rho, u, v, p, tracer; GCE-RT: rho, u, v, p,
  tracer, phi; FNS-KF: u, v); ``solution`` [N, T, X, Y] → u (Wave-*, ACE) with ``c`` [N, X, Y] (coefficient).
- steady: ``source`` and ``solution`` [N, X, Y] (Poisson-Gauss); SE-AF ``solution`` [N, 2, X, Y] → shape
  (coefficient), rho (solution).
The grid is the unit square: ``x = arange(X)/X``; ``time`` is the snapshot index (so the lead time
``(j − i)/(T − 1)`` equals Poseidon's ``(t2 − t1)/20`` for 21 snapshots). Boundary conditions are not stored in
the files: pass ``bc=periodic`` (etc.) to record them. ``channels=a,b,c`` overrides the channel names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sciformer.data.formats.source import ArraySource, VarSpec, convert, open_h5
from sciformer.errors import DataError

NS = {"u": (0.0, 0.391), "v": (0.0, 0.356), "tracer": (0.19586183, 0.37)}
# Normalisation constants of Poseidon's dataset classes (anchor §2.2), used when every variable is covered.
STATS = {
    "NS-Sines": NS, "NS-Gauss": NS, "NS-PwC": NS, "NS-SVS": NS, "NS-BB": NS, "NS-SL": NS,
    "FNS-KF": {"u": (-2.24e-13, 0.22017328), "v": (4.15e-12, 0.22078253)},
    "CE-RM": {"rho": (1.1964245, 0.5543239), "u": (-7.16e-6, 0.24304213), "v": (2.90e-6, 0.2430597),
              "p": (1.5648036, 0.89639103)},
    "Wave-Layer": {"u": (0.03467443, 0.10442422), "c": (3498.564, 647.844)},
    "Wave-Gauss": {"u": (0.03343763, 0.11718791), "c": (2618.459, 601.517)},
    "ACE": {"u": (0.002484262, 0.65351176)},
    "Poisson-Gauss": {"source": (0.014822, 4.755139), "solution": (0.00056035, 0.02401226)},
}
SOLUTION_CHANNELS = {"CE-RM": ["rho", "u", "v", "p", "tracer"], "GCE-RT": ["rho", "u", "v", "p", "tracer", "phi"],
                     "FNS-KF": ["u", "v"]}


def _names(given, default: list[str], n: int, path, var: str) -> list[str]:
    names = given.split(",") if isinstance(given, str) else list(given or default)
    if len(names) != n:
        raise DataError(f"{path}: variable {var!r} has {n} channels but {len(names)} names {names}; pass "
                        "channels=name1,name2,...")
    return names


def open_poseidon(path, channels: str | list[str] | None = None, bc: str | None = None,
                  steady: bool | None = None, **_) -> ArraySource:
    """A lazy source over a Poseidon NetCDF file (see the module docstring for the layouts)."""
    stem = Path(path).stem.replace(".time", "")
    f = open_h5(path)
    try:
        # NetCDF dimensions are stored as 1-D HDF5 "dimension scale" datasets: they are not variables
        shapes = {k: f[k].shape for k in f.keys() if hasattr(f[k], "shape")
                  and not (f[k].ndim == 1 and f[k].attrs.get("CLASS") == b"DIMENSION_SCALE")}
    finally:
        f.close()
    specs: dict[str, VarSpec] = {}
    time_len = None
    if "velocity" in shapes or "data" in shapes or ("solution" in shapes and len(shapes["solution"]) == 5):
        var = next(v for v in ("velocity", "data", "solution") if v in shapes)
        shape = shapes[var]
        if len(shape) != 5:
            raise DataError(f"{path}: variable {var!r} has shape {shape}; expected [N, T, C, X, Y]")
        default = {"velocity": ["u", "v", "tracer"][: shape[2]] if shape[2] <= 3 else [],
                   "data": ["rho", "u", "v", "p", "E"]}.get(var, SOLUTION_CHANNELS.get(stem, []))
        for c, name in enumerate(_names(channels, default, shape[2], path, var)):
            specs[name] = VarSpec(var, "ntcss", "state", (c,))
        n, time_len, spatial = shape[0], shape[1], shape[3:]
    elif "solution" in shapes:
        shape = shapes["solution"]
        is_steady = steady if steady is not None else (len(shape) == 3 or stem.startswith("SE-AF"))
        if len(shape) == 4 and is_steady:  # SE-AF: [N, 2, X, Y] = shape, rho
            names = _names(channels, ["shape", "rho"], shape[1], path, "solution")
            specs[names[0]] = VarSpec("solution", "ncss", "coefficient", (0,))
            for c, name in enumerate(names[1:], 1):
                specs[name] = VarSpec("solution", "ncss", "solution", (c,))
            n, spatial = shape[0], shape[2:]
        elif len(shape) == 4:  # [N, T, X, Y]
            specs[_names(channels, ["u"], 1, path, "solution")[0]] = VarSpec("solution", "ntss")
            n, time_len, spatial = shape[0], shape[1], shape[2:]
        elif len(shape) == 3:  # steady [N, X, Y]
            specs["solution"] = VarSpec("solution", "nss", "solution")
            n, spatial = shape[0], shape[1:]
        else:
            raise DataError(f"{path}: variable 'solution' has shape {shape}; expected 3 to 5 axes")
        for extra, role in (("source", "source"), ("c", "coefficient")):
            if extra in shapes:
                if shapes[extra] != (n, *spatial):
                    raise DataError(f"{path}: variable {extra!r} has shape {shapes[extra]}; expected {(n, *spatial)}")
                specs = {extra: VarSpec(extra, "nss", role), **specs} if role == "source" else \
                    {**specs, extra: VarSpec(extra, "nss", role)}
    else:
        raise DataError(f"{path}: no Poseidon variable (velocity, data, solution) found; has {sorted(shapes)}")
    coords = {a: np.arange(m) / m for a, m in zip(("x", "y", "z"), spatial)}
    time = None if time_len is None else np.arange(time_len, dtype=np.float64)
    attrs = {"pde": stem, "boundary_conditions": {a: bc or "unspecified" for a in coords},
             "domain": {a: [0.0, 1.0] for a in coords}, "time_units": "snapshot index",
             "generator": {"name": "poseidon", "dataset": stem}}
    preset = STATS.get(stem, {})
    stats = {v: {"mean": preset[v][0], "std": preset[v][1]} for v in specs} if all(v in preset for v in specs) else None
    return ArraySource(path, specs, n, time, coords, attrs, stats=stats)


def convert_poseidon(src: Path, out: Path, compressor: str | None = "lz4", *, channels: str | list[str] | None = None,
                     bc: str | None = None, steady: bool | None = None) -> Path:
    """``sciformer data convert X.nc OUT.zarr --from poseidon [--option bc=periodic channels=u,v,tracer]``."""
    return convert(open_poseidon(src, channels=channels, bc=bc, steady=steady), out, compressor=compressor)
