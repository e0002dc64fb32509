"""The Well HDF5 files, read as The Well's own ``WellDataset`` reads them (PolymathicAI/the_well
``docs/data_format.md`` and ``the_well/data/datasets.py``; shared/anchors/landscape-2026.md §4).

- ``/t0_fields/<f>`` [B, T, *S] scalars, ``/t1_fields/<f>`` [B, T, *S, D] vectors → ``<f>_<dim>``,
  ``/t2_fields/<f>`` [B, T, *S, D, D] tensors → ``<f>_<dim><dim>`` (WellDataset's names and channel order:
  t0, t1, t2 fields in ``field_names`` order, components in ``itertools.product(spatial_dims)`` order). A field
  without ``sample_varying`` drops B, without ``time_varying`` drops T (it becomes a static ``coefficient``);
  with ``dim_varying`` false on an axis it is constant along it: stored without that axis (the spec) or with
  length 1 there, and read broadcast to the full grid.
- ``/dimensions``: ``time`` [T], or [B, T] with ``sample_varying`` (per-trajectory time grids, kept as
  ``trajectory_time`` when the rows differ), and one coordinate per name in attr ``spatial_dims``.
- ``/boundary_conditions/<name>``: ``bc_type`` WALL | OPEN | PERIODIC, ``associated_dims``, ``mask``. As in
  WellDataset: every side is ``open`` unless a group says otherwise; a WALL group counts for a side only if
  its mask covers the whole edge, the others if any cell of the edge is masked; later groups win.
- ``/scalars/<name>`` and the root attrs → ``generator.parameters``: root attributes keep their float64
  value; float32 values are read as the shortest decimal that round-trips (0.7, not 0.699999988); list
  attributes stay lists even with one item.
- ``stats.yaml`` (``<dataset>/stats.yaml`` two levels above ``data/<split>/file``) gives mean/std, std clipped
  at 1e-4 as WellDataset's ``ZScoreNormalization`` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sciformer.data.formats.source import ArraySource, VarSpec, convert, open_h5
from sciformer.errors import DataError

BC_NAMES = {"PERIODIC": "periodic", "WALL": "wall", "OPEN": "open"}
MIN_STD = 1e-4  # the_well ZScoreNormalization(min_denom=1e-4)


def _str(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _strs(xs) -> list[str]:
    return [_str(x) for x in (xs if isinstance(xs, (list, tuple, np.ndarray)) else [xs])]


def _value(x):
    """A JSON-ready parameter value: float32 through its shortest round-tripping decimal, arrays as lists."""
    if isinstance(x, bytes):
        return x.decode()
    if isinstance(x, (np.ndarray, list, tuple)):
        return [_value(v) for v in x]
    if isinstance(x, np.floating) and x.dtype.itemsize <= 4:
        return float(str(x))
    if isinstance(x, np.generic):
        return x.item()
    return x


def _find_stats(path: Path, given: str | None) -> dict:
    import yaml

    for cand in ([Path(given)] if given else [path.parent.parent.parent / "stats.yaml", path.parent / "stats.yaml"]):
        if cand.is_file():
            try:
                return yaml.safe_load(cand.read_text()) or {}
            except yaml.YAMLError as e:
                raise DataError(f"{cand}: invalid YAML ({e})") from None
    return {}


def _boundary_conditions(path, f, dims: list[str]) -> dict[str, list[str]]:
    """Per axis [lower, upper], by WellDataset's rule (``_padding_bcs``)."""
    bcs = {d: ["open", "open"] for d in dims}
    for name, g in f.get("boundary_conditions", {}).items():
        raw = _str(g.attrs.get("bc_type", "")).upper()
        if raw not in BC_NAMES:
            raise DataError(f"{path}: boundary condition {name!r} has unknown bc_type {g.attrs.get('bc_type')!r}; "
                            f"The Well's are {sorted(BC_NAMES)}")
        assoc = _strs(g.attrs.get("associated_dims", []))
        if "mask" not in g:
            raise DataError(f"{path}: boundary condition {name!r} has no 'mask' dataset")
        mask = np.asarray(g["mask"][...], dtype=bool)
        lead = mask.ndim - len(assoc)  # sample/time-varying masks carry those axes first
        if lead < 0:
            raise DataError(f"{path}: boundary condition {name!r}: mask has {mask.ndim} axes for associated_dims "
                            f"{assoc}")
        agg = np.all if raw == "WALL" else np.any  # a wall must cover the whole edge
        for k, d in enumerate(assoc):
            if d not in bcs:
                raise DataError(f"{path}: boundary condition {name!r} names axis {d!r}, not in spatial_dims {dims}")
            for side, edge in ((0, 0), (1, -1)):
                if mask.shape[lead + k] and agg(np.take(mask, edge, axis=lead + k)):
                    bcs[d][side] = BC_NAMES[raw]
    return bcs


def _field_spec(path, group: str, field: str, ds, dims: list[str], order: int, n_time: int):
    a = ds.attrs
    sv, tv = bool(a.get("sample_varying", True)), bool(a.get("time_varying", True))
    varying = np.asarray(a.get("dim_varying", [True] * len(dims)), dtype=bool).ravel()
    if len(varying) != len(dims):
        raise DataError(f"{path}: field {field!r} has dim_varying {varying.tolist()}; expected {len(dims)} entries "
                        f"(spatial_dims {dims})")
    constant = tuple(int(k) for k in np.flatnonzero(~varying))
    lead = ("n" if sv else "") + ("t" if tv else "")
    full, reduced = lead + "s" * len(dims) + "c" * order, lead + "s" * int(varying.sum()) + "c" * order
    if ds.ndim == len(reduced) and (constant or ds.ndim == len(full)):
        axes, dropped = reduced, bool(constant)
    elif ds.ndim == len(full) and all(ds.shape[len(lead) + k] == 1 for k in constant):
        axes, dropped = full, False
    else:
        raise DataError(f"{path}: field {group}/{field} has shape {ds.shape}; expected "
                        f"{'[trajectory] ' if sv else ''}{'[time] ' if tv else ''}spatial axes {dims} (those with "
                        f"dim_varying false dropped or of length 1){' and components' if order else ''}")
    if tv and ds.shape[len(lead) - 1] != n_time:
        raise DataError(f"{path}: field {group}/{field} has {ds.shape[len(lead) - 1]} snapshots; /dimensions/time "
                        f"has {n_time}")
    return axes, dropped, constant, ("state" if tv else "coefficient"), sv


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
        coords = {}
        for d in dims:
            if d not in f["dimensions"]:
                raise DataError(f"{path}: /dimensions/{d} is missing (named in spatial_dims)")
            c = np.asarray(f["dimensions"][d][...], dtype=np.float64)
            if c.ndim == 2:  # sample-varying coordinates: one grid is all a store holds
                if not np.allclose(c, c[:1]):
                    raise DataError(f"{path}: coordinate {d!r} differs between trajectories; a store needs one grid")
                c = c[0]
            coords[d] = c
        if "time" not in f["dimensions"]:
            raise DataError(f"{path}: /dimensions/time is missing")
        time = np.asarray(f["dimensions"]["time"][...], dtype=np.float64)
        trajectory_time = None
        if time.ndim == 2:  # sample_varying: [B, T]
            if not np.array_equal(time, np.broadcast_to(time[:1], time.shape)):
                trajectory_time = time
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
                axes, dropped, constant, role, sv = _field_spec(path, f"t{order}_fields", field, ds, dims, order,
                                                                len(time))
                if sv:
                    n = n or ds.shape[0]
                    if ds.shape[0] != n:
                        raise DataError(f"{path}: field {field!r} has {ds.shape[0]} trajectories; n_trajectories "
                                        f"is {n}")
                kw = {"role": role, "constant": constant, "dropped": dropped}
                if order == 0:
                    specs[field] = VarSpec(f"t0_fields/{field}", axes, **kw)
                elif order == 1:
                    for k, d in enumerate(dims):
                        specs[f"{field}_{d}"] = VarSpec(f"t1_fields/{field}", axes, channel=(k,), **kw)
                else:
                    for k, d in enumerate(dims):
                        for m, e in enumerate(dims):
                            specs[f"{field}_{d}{e}"] = VarSpec(f"t2_fields/{field}", axes, channel=(k, m), **kw)
        if not specs:
            raise DataError(f"{path}: no fields in t0_fields/t1_fields/t2_fields")
        bcs = _boundary_conditions(path, f, dims)
        params = {k: _value(v) for k, v in attrs.items() if k not in ("n_trajectories", "n_spatial_dims")}
        if "scalars" in f:  # root attributes (float64 in the published files) take precedence
            for k, v in f["scalars"].items():
                if v.size == 1 and k not in params:
                    params[k] = _value(v[...].reshape(())[()])
    finally:
        f.close()
    if not n:
        raise DataError(f"{path}: cannot tell the number of trajectories (no n_trajectories attribute and no "
                        "sample-varying field)")
    if trajectory_time is not None and trajectory_time.shape[0] != n:
        raise DataError(f"{path}: /dimensions/time has {trajectory_time.shape[0]} rows for {n} trajectories")
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
                out_stats[name] = {"mean": float(m[idx]), "std": max(float(s[idx]), MIN_STD)}
    stats_ok = len(out_stats) == len(specs)
    return ArraySource(path, specs, n, time, coords, attrs_out, stats=out_stats if stats_ok else None,
                       trajectory_time=trajectory_time)


def convert_well(src: Path, out: Path, compressor: str | None = "lz4", *, stats: str | None = None) -> Path:
    """``sciformer data convert file.hdf5 OUT.zarr --from well [--option stats=stats.yaml]``."""
    return convert(open_well(src, stats=stats), out, compressor=compressor)
