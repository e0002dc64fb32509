"""The Well HDF5 files (PolymathicAI/the_well ``docs/data_format.md``; shared/anchors/pde-ecosystem.md §2.1).

- ``/t0_fields/<f>`` [B, T, *S] scalars, ``/t1_fields/<f>`` [B, T, *S, D] vectors → ``<f>_<dim>``,
  ``/t2_fields/<f>`` [B, T, *S, D, D] tensors → ``<f>_<dim><dim>``; a field without ``sample_varying`` drops
  B, without ``time_varying`` drops T (it becomes a static ``coefficient``).
- ``/dimensions``: ``time`` and one coordinate per name in attr ``spatial_dims``.
- ``/boundary_conditions/<name>``: attrs ``bc_type`` (WALL | OPEN | PERIODIC), ``associated_dims``; dataset
  ``mask`` (True where it applies) → per axis ``periodic`` / ``wall`` / ``open``, or ``[lower, upper]``.
- ``/scalars/<name>`` and the root attrs → ``generator.parameters``.
- ``stats.yaml`` (``<dataset>/stats.yaml`` two levels above ``data/<split>/file``) gives mean/std for lazy reading.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sciformer.data.formats.source import ArraySource, VarSpec, convert, open_h5
from sciformer.errors import DataError

BC_NAMES = {"PERIODIC": "periodic", "WALL": "wall", "OPEN": "open"}


def _str(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _strs(xs) -> list[str]:
    return [_str(x) for x in (xs if isinstance(xs, (list, tuple, np.ndarray)) else [xs])]


def _scalar(x):
    a = np.asarray(x)
    if a.dtype.kind in "SUO":
        return _str(a.item()) if a.size == 1 else [_str(v) for v in a.ravel()]
    return a.item() if a.size == 1 else a.tolist()


def _find_stats(path: Path, given: str | None) -> dict:
    import yaml

    for cand in ([Path(given)] if given else [path.parent.parent.parent / "stats.yaml", path.parent / "stats.yaml"]):
        if cand.is_file():
            try:
                return yaml.safe_load(cand.read_text()) or {}
            except yaml.YAMLError as e:
                raise DataError(f"{cand}: invalid YAML ({e})") from None
    return {}


def open_well(path, stats: str | None = None, **_) -> ArraySource:
    """A lazy source over one Well HDF5 file."""
    path = Path(path)
    f = open_h5(path)
    try:
        attrs = dict(f.attrs)
        if "dimensions" not in f:
            raise DataError(f"{path}: no /dimensions group; not a Well file")
        dims = _strs(f["dimensions"].attrs.get("spatial_dims", []))
        if not dims:
            raise DataError(f"{path}: /dimensions has no 'spatial_dims' attribute")
        coords = {d: np.asarray(f["dimensions"][d][...], dtype=np.float64) for d in dims}
        if "time" not in f["dimensions"]:
            raise DataError(f"{path}: /dimensions/time is missing")
        time = np.asarray(f["dimensions"]["time"][...], dtype=np.float64)
        if time.ndim == 2:  # sample-varying time grid: uniform dt per file is the Well's rule
            time = time[0]
        n = int(attrs.get("n_trajectories", 0))
        specs: dict[str, VarSpec] = {}
        for order in (0, 1, 2):
            group = f.get(f"t{order}_fields")
            if group is None:
                continue
            for field in _strs(group.attrs.get("field_names", list(group.keys()))):
                if field not in group:
                    raise DataError(f"{path}: t{order}_fields lists {field!r} but has no such dataset")
                ds = group[field]
                a = ds.attrs
                sv, tv = bool(a.get("sample_varying", True)), bool(a.get("time_varying", True))
                dim_varying = np.asarray(a.get("dim_varying", [True] * len(dims)), dtype=bool)
                if not dim_varying.all():
                    raise DataError(f"{path}: field {field!r} is constant along some spatial axes (dim_varying="
                                    f"{dim_varying.tolist()}); such fields are not supported")
                axes = ("n" if sv else "") + ("t" if tv else "") + "s" * len(dims) + "c" * order
                if ds.ndim != len(axes):
                    raise DataError(f"{path}: field {field!r} has {ds.ndim} axes; expected {len(axes)} "
                                    f"({'trajectory, ' if sv else ''}{'time, ' if tv else ''}{', '.join(dims)}"
                                    f"{', component' * order})")
                if sv:
                    n = n or ds.shape[0]
                role = "state" if tv else "coefficient"
                if order == 0:
                    specs[field] = VarSpec(f"t0_fields/{field}", axes, role)
                elif order == 1:
                    for k, d in enumerate(dims):
                        specs[f"{field}_{d}"] = VarSpec(f"t1_fields/{field}", axes, role, (k,))
                else:
                    for k, d in enumerate(dims):
                        for m, e in enumerate(dims):
                            specs[f"{field}_{d}{e}"] = VarSpec(f"t2_fields/{field}", axes, role, (k, m))
        if not specs:
            raise DataError(f"{path}: no fields in t0_fields/t1_fields/t2_fields")
        bcs: dict[str, list[str]] = {d: ["unspecified", "unspecified"] for d in dims}
        for name, g in f.get("boundary_conditions", {}).items():
            kind = BC_NAMES.get(_str(g.attrs.get("bc_type", "")).upper())
            if kind is None:
                raise DataError(f"{path}: boundary condition {name!r} has unknown bc_type {g.attrs.get('bc_type')!r}")
            for d in _strs(g.attrs.get("associated_dims", [])):
                mask = np.asarray(g["mask"][...]) if "mask" in g else np.ones(2, dtype=bool)
                if d in bcs:
                    bcs[d] = [kind if mask.flat[0] else bcs[d][0], kind if mask.flat[-1] else bcs[d][1]]
        params = {k: _scalar(v) for k, v in attrs.items() if k not in ("n_trajectories", "n_spatial_dims")}
        if "scalars" in f:
            params.update({k: _scalar(v[...]) for k, v in f["scalars"].items() if v.size == 1})
    finally:
        f.close()
    if not n:
        raise DataError(f"{path}: cannot tell the number of trajectories (no n_trajectories attribute and no "
                        "sample-varying field)")
    attrs_out = {"pde": params.get("dataset_name", path.stem),
                 "boundary_conditions": {d: b[0] if b[0] == b[1] else b for d, b in bcs.items()},
                 "domain": {d: [float(c[0]), float(c[-1])] for d, c in coords.items()},
                 "generator": {"name": "the_well", "parameters": params}}
    raw = _find_stats(path, stats)
    out_stats = {}
    if raw.get("mean") and raw.get("std"):
        for name, spec in specs.items():
            field = spec.dataset.split("/")[1]
            if field in raw["mean"] and field in raw["std"]:
                m, s = np.asarray(raw["mean"][field], float), np.asarray(raw["std"][field], float)
                idx = spec.channel if m.ndim == len(spec.channel) else ()
                out_stats[name] = {"mean": float(m[idx]), "std": float(s[idx])}
    stats_ok = len(out_stats) == len(specs)
    return ArraySource(path, specs, n, time, coords, attrs_out, stats=out_stats if stats_ok else None)


def convert_well(src: Path, out: Path, compressor: str | None = "lz4", *, stats: str | None = None) -> Path:
    """``sciformer data convert file.hdf5 OUT.zarr --from well [--option stats=stats.yaml]``."""
    return convert(open_well(src, stats=stats), out, compressor=compressor)
