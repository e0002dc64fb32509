"""PDEBench HDF5 files (pdebench/PDEBench loaders; shared/anchors/pde-ecosystem.md §2.2).

- single array: ``tensor`` [B, T, X] (1-D advection/Burgers/reaction-diffusion) → ``u``; Darcy ``tensor``
  [B, 1, X, Y] (steady ``solution``) with ``nu`` [B, X, Y] (``coefficient``); coordinates ``x-coordinate``,
  ``y-coordinate``, ``t-coordinate``.
- per variable: ``density, pressure, Vx, Vy(, Vz)`` [B, T, X(, Y, Z)] → ``rho, p, u, v(, w)``.
- incompressible NS: ``velocity`` [B, T, X, Y, 2] → ``u, v``; ``particles`` [B, T, X, Y, 1] → ``particles``.
- per sample groups ``"0000"…``: ``data`` [T, X(, Y), C] with ``grid/x``, ``grid/y``, ``grid/t``; channel names
  from ``channels=a,b`` (default ``h`` for shallow water ``rdb``, ``u, v`` for ``diff-react``, else ``data_<k>``).
A ``t-coordinate`` with one entry more than the snapshots (as some PDEBench files have) is cut to the snapshots.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sciformer.data.formats.source import ArraySource, VarSpec, convert, open_h5
from sciformer.errors import DataError

RENAME = {"density": "rho", "pressure": "p", "Vx": "u", "Vy": "v", "Vz": "w"}
AXES = ("x", "y", "z")


def _time(f, key: str, n_time: int) -> np.ndarray:
    if key in f:
        t = np.asarray(f[key][...], dtype=np.float64).ravel()
        if len(t) == n_time + 1:
            t = t[:n_time]
        if len(t) == n_time:
            return t
    return np.arange(n_time, dtype=np.float64)


def _coords(f, spatial: tuple[int, ...], template: str = "{a}-coordinate") -> dict[str, np.ndarray]:
    out = {}
    for a, m in zip(AXES, spatial):
        key = template.format(a=a)
        c = np.asarray(f[key][...], dtype=np.float64).ravel() if key in f else None
        out[a] = c if c is not None and len(c) == m else np.arange(m) / m
    return out


def open_pdebench(path, channels: str | list[str] | None = None, bc: str | None = None, **_) -> ArraySource:
    """A lazy source over a PDEBench HDF5 file (see the module docstring for the layouts)."""
    path = Path(path)
    f = open_h5(path)
    keys = None
    try:
        top = set(f.keys())
        specs: dict[str, VarSpec] = {}
        if "tensor" in top:
            shape = f["tensor"].shape
            if "nu" in top and len(shape) == 4 and shape[1] == 1:  # Darcy
                specs = {"nu": VarSpec("nu", "nss", "coefficient"), "solution": VarSpec("tensor", "ncss", "solution", (0,))}
                n, time, spatial = shape[0], None, shape[2:]
                if f["nu"].shape != (n, *spatial):
                    raise DataError(f"{path}: variable 'nu' has shape {f['nu'].shape}; expected {(n, *spatial)}")
            elif len(shape) in (3, 4, 5):  # [B, T, X(, Y, Z)]
                specs = {"u": VarSpec("tensor", "nt" + "s" * (len(shape) - 2))}
                n, spatial = shape[0], shape[2:]
                time = _time(f, "t-coordinate", shape[1])
            else:
                raise DataError(f"{path}: variable 'tensor' has shape {shape}; expected [B, T, X(, Y, Z)] or "
                                "Darcy's [B, 1, X, Y] with 'nu'")
            coords = _coords(f, spatial)
        elif top & set(RENAME):
            names = [k for k in ("density", "Vx", "Vy", "Vz", "pressure") if k in top]
            shape = f[names[0]].shape
            for k in names:
                if f[k].shape != shape:
                    raise DataError(f"{path}: variable {k!r} has shape {f[k].shape}; expected {shape} like {names[0]!r}")
            specs = {RENAME[k]: VarSpec(k, "nt" + "s" * (len(shape) - 2)) for k in names}
            n, spatial = shape[0], shape[2:]
            time = _time(f, "t-coordinate", shape[1])
            coords = _coords(f, spatial)
        elif "velocity" in top:
            shape = f["velocity"].shape
            if len(shape) != 5 or shape[-1] != 2:
                raise DataError(f"{path}: variable 'velocity' has shape {shape}; expected [B, T, X, Y, 2]")
            specs = {"u": VarSpec("velocity", "ntssc", channel=(0,)), "v": VarSpec("velocity", "ntssc", channel=(1,))}
            if "particles" in top:
                specs["particles"] = VarSpec("particles", "ntssc", channel=(0,))
            n, spatial = shape[0], shape[2:4]
            time = _time(f, "t", shape[1])
            coords = _coords(f, spatial)
        else:
            keys = sorted(k for k in top if k.isdigit())
            if not keys:
                raise DataError(f"{path}: unknown PDEBench layout (top-level keys {sorted(top)[:8]})")
            g = f[keys[0]]
            if "data" not in g:
                raise DataError(f"{path}: group {keys[0]!r} has no 'data' dataset")
            shape = g["data"].shape  # [T, X(, Y), C]
            n_ch = shape[-1]
            stem = path.stem
            default = ["h"] if "rdb" in stem and n_ch == 1 else ["u", "v"] if "diff-react" in stem and n_ch == 2 \
                else [f"data_{k}" for k in range(n_ch)]
            names = channels.split(",") if isinstance(channels, str) else list(channels or default)
            if len(names) != n_ch:
                raise DataError(f"{path}: 'data' has {n_ch} channels but {len(names)} names {names}; pass "
                                "channels=name1,name2,...")
            axes = "t" + "s" * (len(shape) - 2) + "c"
            specs = {nm: VarSpec("{key}/data", axes, channel=(k,)) for k, nm in enumerate(names)}
            n, spatial = len(keys), shape[1:-1]
            time = _time(g, "grid/t", shape[0])
            coords = _coords(g, spatial, "grid/{a}")
            for k in keys[1:2] + keys[-1:]:
                if k not in f or "data" not in f[k] or f[k]["data"].shape != shape:
                    raise DataError(f"{path}: group {k!r} has no 'data' of shape {shape}")
    finally:
        f.close()
    attrs = {"pde": path.stem, "boundary_conditions": {a: bc or "unspecified" for a in coords},
             "domain": {a: [float(c[0]), float(c[-1])] for a, c in coords.items()},
             "generator": {"name": "pdebench", "file": path.name}}
    return ArraySource(path, specs, n, time, coords, attrs, keys=keys)


def convert_pdebench(src: Path, out: Path, compressor: str | None = "lz4", *, channels: str | list[str] | None = None,
                     bc: str | None = None) -> Path:
    """``sciformer data convert file.hdf5 OUT.zarr --from pdebench [--option channels=h]``."""
    return convert(open_pdebench(src, channels=channels, bc=bc), out, compressor=compressor)
