"""Poseidon NetCDF data sets (camlab-ethz/<name>.nc, read with h5py as Poseidon does).

Layouts (shared/anchors/poseidon.md §2.1), axes as stored:
- ``velocity`` [N, T, C, X, Y]: C=3 → u, v, tracer (NS-Sines, NS-Gauss, NS-PwC, ...); C=2 → u, v (NS-SL).
- ``data`` [N, T, 5, X, Y] → rho, u, v, p, E (CE-RP, CE-CRP, CE-KH, CE-Gauss, CE-RPUI).
- ``solution`` [N, T, C, X, Y]: channels by data set (CE-RM: rho, u, v, p, tracer; GCE-RT: rho, u, v, p,
  tracer, phi; FNS-KF: u, v); ``solution`` [N, T, X, Y] → u (Wave-*, ACE) with ``c`` [N, X, Y] (coefficient).
- steady: ``source`` and ``solution`` [N, X, Y] (Poisson-Gauss); SE-AF ``solution`` [N, 2, X, Y] → shape
  (coefficient), rho (solution); Helmholtz (``Helmholtz.h5``) groups ``Sample_{i}`` (i = 0, 1, … in numeric
  order) with ``a`` [X, Y] → ``a`` (coefficient), the Dirichlet value ``bc`` (a scalar) → ``bc`` (a constant
  coefficient field, as Poseidon feeds it), ``u`` → ``u`` (solution).
Per-dataset conventions of Poseidon's dataset classes (``scOT/problems``) that change values are applied:
NS-SL is read transposed (``ShearLayer`` passes ``transpose=True`` to ``IncompressibleBase``, which applies
``.transpose(-2, -1)`` to every channel). Normalisation presets
(:data:`sciformer.data.normalization.POSEIDON_PRESETS`) are Poseidon's constants, including the CE pressure
offsets (``CompressibleBase`` subtracts ``mean_pressure`` before its z-score, so p has mean offset and std
0.185); variables Poseidon does not normalise keep mean 0 / std 1 where it feeds them raw (SE-AF ``shape``,
Helmholtz ``bc``; Helmholtz ``a`` enters as ``a − 1``: mean 1, std 1); the rest (e.g. CE channel 4, which
Poseidon's code never reads) get statistics from a streaming pass.
The grid is the unit square: ``x = arange(X)/X``; ``time`` is the snapshot index (so the lead time
``(j − i)/(T − 1)`` equals Poseidon's ``(t2 − t1)/20`` for 21 snapshots). Boundary conditions are not stored in
the files: pass ``bc=periodic`` (etc.) to record them. ``channels=a,b,c`` overrides the channel names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sciformer.data.formats.source import ArraySource, VarSpec, convert, open_h5
from sciformer.data.normalization import POSEIDON_PRESETS as STATS  # Poseidon's constants, per data set
from sciformer.errors import DataError

TRANSPOSED = ("NS-SL",)  # incompressible.py ShearLayer: transpose=True
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
    if any(k.startswith("Sample_") for k in f.keys()):
        try:
            return _open_helmholtz(path, f, stem, bc)
        finally:
            f.close()
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
        flip = (1, 0) if stem in TRANSPOSED else ()
        for c, name in enumerate(_names(channels, default, shape[2], path, var)):
            specs[name] = VarSpec(var, "ntcss", "state", (c,), transpose=flip)
        n, time_len, spatial = shape[0], shape[1], shape[3:][::-1] if flip else shape[3:]
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
    if stem in TRANSPOSED:
        attrs["transposed"] = "x and y swapped as Poseidon's ShearLayer reads NS-SL (transpose=True)"
    return ArraySource(path, specs, n, time, coords, attrs, stats=_presets(stem, specs))


def _presets(stem: str, specs) -> dict:
    """Poseidon's constants for the variables it normalises (the rest: a streaming pass)."""
    preset = STATS.get(stem, {})
    return {v: {"mean": preset[v][0], "std": preset[v][1]} for v in specs if v in preset}


def _open_helmholtz(path, f, stem: str, bc: str | None) -> ArraySource:
    """Helmholtz.h5: groups ``Sample_{i}`` with ``a``, ``bc``, ``u`` (elliptic/helmholtz.py)."""
    groups = [k for k in f.keys() if k.startswith("Sample_")]
    try:
        keys = sorted(groups, key=lambda k: int(k.removeprefix("Sample_")))
    except ValueError:
        raise DataError(f"{path}: group names {groups[:4]}...; expected Sample_0, Sample_1, ...") from None
    if [int(k.removeprefix("Sample_")) for k in keys] != list(range(len(keys))):
        raise DataError(f"{path}: Sample_ groups are not numbered 0..{len(keys) - 1} (Poseidon indexes them so)")
    g = f[keys[0]]
    for name in ("a", "bc", "u"):
        if name not in g:
            raise DataError(f"{path}: group {keys[0]!r} has no {name!r} dataset (expected a, bc, u)")
    shape = g["u"].shape
    if len(shape) == 3 and shape[0] == 1:
        field_axes, spatial = "css", shape[1:]
    elif len(shape) == 2:
        field_axes, spatial = "ss", shape
    else:
        raise DataError(f"{path}: {keys[0]}/u has shape {shape}; expected [X, Y] (or [1, X, Y])")
    if g["a"].shape != shape:
        raise DataError(f"{path}: {keys[0]}/a has shape {g['a'].shape}; expected {shape} like 'u'")
    if g["bc"].size != 1:
        raise DataError(f"{path}: {keys[0]}/bc has shape {g['bc'].shape}; expected one value")
    ch = (0,) if field_axes == "css" else ()
    bc_axes = "c" * g["bc"].ndim
    specs = {"a": VarSpec("{key}/a", field_axes, "coefficient", ch),
             "bc": VarSpec("{key}/bc", bc_axes, "coefficient", (0,) * g["bc"].ndim, constant=(0, 1), dropped=True),
             "u": VarSpec("{key}/u", field_axes, "solution", ch)}
    coords = {a: np.arange(m) / m for a, m in zip(("x", "y"), spatial)}
    attrs = {"pde": stem, "boundary_conditions": {a: bc or "dirichlet" for a in coords},
             "domain": {a: [0.0, 1.0] for a in coords}, "generator": {"name": "poseidon", "dataset": stem}}
    return ArraySource(path, specs, len(keys), None, coords, attrs, keys=keys, stats=_presets(stem, specs))


def convert_poseidon(src: Path, out: Path, compressor: str | None = "lz4", *, channels: str | list[str] | None = None,
                     bc: str | None = None, steady: bool | None = None) -> Path:
    """``sciformer data convert X.nc OUT.zarr --from poseidon [--option bc=periodic channels=u,v,tracer]``."""
    return convert(open_poseidon(src, channels=channels, bc=bc, steady=steady), out, compressor=compressor)
