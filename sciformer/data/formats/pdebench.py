"""PDEBench HDF5 files (pdebench/PDEBench loaders; shared/anchors/pde-ecosystem.md §2.2).

- single array: ``tensor`` [B, T, X] (1-D advection/Burgers/reaction-diffusion) → ``u``; Darcy ``tensor``
  [B, 1, X, Y] (steady ``solution``) with ``nu`` [B, X, Y] (``coefficient``); coordinates ``x-coordinate``,
  ``y-coordinate``, ``t-coordinate``.
- per variable: ``density, pressure, Vx, Vy(, Vz)`` [B, T, X(, Y, Z)] → ``rho, p, u, v(, w)``.
- incompressible NS (``ns_incom_*.h5``, ``data_gen/src/data_io.py``): ``velocity`` [B, T, X, Y, 2] → ``u, v``;
  ``particles`` [B, T, X, Y, 1] → ``particles``; ``force`` [B, X, Y, 2] → ``force_x, force_y`` (static
  ``forcing``); ``t`` [B, T], one row per trajectory: one shared time axis when the rows agree, per-trajectory
  time grids (``trajectory_time``) when they differ; boundary conditions from the ``config`` attribute's
  ``velocity_extrapolation`` (phiflow ZERO → dirichlet, PERIODIC → periodic, BOUNDARY → neumann).
- per sample groups ``"0000"…``: ``data`` [T, X(, Y), C] with ``grid/x``, ``grid/y``, ``grid/t``; channel names
  from ``channels=a,b`` (default ``h`` for shallow water ``rdb``, ``u, v`` for ``diff-react``, else ``data_<k>``).
A ``t-coordinate`` with one entry more than the snapshots (as some PDEBench files have) is cut to the snapshots.
Boundary conditions: ``bc=`` if given, else what the file name states (``periodic``; ``trans``, transmissive,
→ ``open``), else ``unspecified``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sciformer.data.formats.source import ArraySource, VarSpec, convert, open_h5
from sciformer.errors import DataError

RENAME = {"density": "rho", "pressure": "p", "Vx": "u", "Vy": "v", "Vz": "w"}
AXES = ("x", "y", "z")
NAME_BCS = {"periodic": "periodic", "trans": "open"}  # file-name tokens (e.g. 2D_CFD_Rand_..._periodic_128)
PHIFLOW_BCS = {"ZERO": "dirichlet", "PERIODIC": "periodic", "BOUNDARY": "neumann"}


def _name_bc(stem: str) -> str | None:
    import re

    found = {NAME_BCS[t] for t in re.split(r"[_\-.]", stem.lower()) if t in NAME_BCS}
    return found.pop() if len(found) == 1 else None


def _config(f) -> dict:
    """The generator's Hydra config (YAML in attr ``config``), or {}."""
    import yaml

    raw = f.attrs.get("config")
    if raw is None:
        return {}
    try:
        out = yaml.safe_load(raw.decode() if isinstance(raw, bytes) else str(raw))
    except yaml.YAMLError:
        return {}
    return out if isinstance(out, dict) else {}


def _row_times(path, f, n: int, n_time: int) -> tuple[np.ndarray, np.ndarray | None]:
    """NS-incom's ``t`` [B, T]: (shared time, None) when every row agrees, else (row 0, per-trajectory rows)."""
    t = np.asarray(f["t"][...], dtype=np.float64)
    if t.ndim == 1 and len(t) == n_time:
        return t, None
    if t.shape != (n, n_time):
        raise DataError(f"{path}: 't' has shape {t.shape}; expected [B, T] = {(n, n_time)} (one row of snapshot times "
                        "per trajectory, as PDEBench's ns_incom files store it)")
    if not np.isfinite(t).all() or (t.shape[1] > 1 and not (np.diff(t, axis=1) > 0).all()):
        raise DataError(f"{path}: 't' must be finite and increasing along each row")
    if np.array_equal(t, np.broadcast_to(t[:1], t.shape)):
        return t[0], None
    return t[0], t


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
    keys, trajectory_time, file_bc, params = None, None, None, {}
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
            n, spatial = shape[0], shape[2:4]
            if "particles" in top:
                if f["particles"].shape != (*shape[:4], 1):
                    raise DataError(f"{path}: 'particles' has shape {f['particles'].shape}; expected {(*shape[:4], 1)}")
                specs["particles"] = VarSpec("particles", "ntssc", channel=(0,))
            if "force" in top:  # per-trajectory forcing field (static), returned by PDEBench's HDF5Dataset
                if f["force"].shape != (n, *spatial, 2):
                    raise DataError(f"{path}: 'force' has shape {f['force'].shape}; expected [B, X, Y, 2] = "
                                    f"{(n, *spatial, 2)}")
                for k, a in enumerate(("x", "y")):
                    specs[f"force_{a}"] = VarSpec("force", "nssc", "forcing", (k,))
            if "t" in top:
                time, trajectory_time = _row_times(path, f, n, shape[1])
            else:
                time = np.arange(shape[1], dtype=np.float64)
            coords = _coords(f, spatial)
            config = _config(f)
            file_bc = PHIFLOW_BCS.get(str(config.get("velocity_extrapolation", "")).upper())
            params = {k: config[k] for k in ("NU", "DT", "n_steps", "frame_int", "seed", "velocity_extrapolation",
                                             "particle_extrapolation", "force_extrapolation") if k in config}
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
        for k, v in f.attrs.items():  # e.g. beta, Nu, M, Eta, Zeta of the merged files
            if k != "config" and np.asarray(v).size == 1 and np.asarray(v).dtype.kind in "biuf":
                params.setdefault(k, float(str(v)) if np.asarray(v).dtype.itemsize <= 4 and
                                  np.asarray(v).dtype.kind == "f" else np.asarray(v).item())
    finally:
        f.close()
    kind = bc or file_bc or _name_bc(path.stem) or "unspecified"
    attrs = {"pde": path.stem, "boundary_conditions": {a: kind for a in coords},
             "domain": {a: [float(c[0]), float(c[-1])] for a, c in coords.items()},
             "generator": {"name": "pdebench", "file": path.name, **({"parameters": params} if params else {})}}
    return ArraySource(path, specs, n, time, coords, attrs, keys=keys, trajectory_time=trajectory_time)


def convert_pdebench(src: Path, out: Path, compressor: str | None = "lz4", *, channels: str | list[str] | None = None,
                     bc: str | None = None) -> Path:
    """``sciformer data convert file.hdf5 OUT.zarr --from pdebench [--option channels=h]``."""
    return convert(open_pdebench(src, channels=channels, bc=bc), out, compressor=compressor)
