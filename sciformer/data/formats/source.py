"""The source interface the format readers share: :class:`ArraySource` reads like a
:class:`~sciformer.data.store.FieldStore` (lazily, one snapshot per read), built from per-variable
:class:`VarSpec` descriptions of where a variable lives in the file; :func:`convert` writes any source as a
canonical store."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sciformer.errors import DataError


@dataclass(frozen=True)
class VarSpec:
    """Where one variable lives: HDF5 dataset path and its axis letters.

    ``axes``: one letter per dataset axis: ``n`` trajectory, ``t`` time, ``c`` channel/component (the
    ``channel`` index(es) select it), ``s`` spatial (in store axis order). ``dataset`` may contain ``{key}``,
    replaced by the trajectory's group name (files with one group per sample).
    """

    dataset: str
    axes: str
    role: str = "state"
    channel: tuple[int, ...] = ()
    units: str = "1"


def open_h5(path: str | os.PathLike):
    """h5py handle with one clear error for missing, truncated or non-HDF5 files."""
    import h5py

    if not Path(path).exists():
        raise DataError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: cannot open as HDF5/NetCDF4 ({e}); the file is truncated or in another format: "
                        "re-download or re-export it") from None


class ArraySource:
    """Lazy field source over an HDF5 file described by :class:`VarSpec` entries (picklable; reopens per process)."""

    def __init__(self, path, specs: dict[str, VarSpec], n_trajectories: int, time: np.ndarray | None,
                 coords: dict[str, np.ndarray], attrs: dict[str, Any] | None = None, keys: list[str] | None = None,
                 stats: dict | None = None, check_finite: bool = True):
        self.path = str(path)
        self.specs, self.keys = specs, keys
        self.variables = list(specs)
        self.roles = {k: v.role for k, v in specs.items()}
        self.units = {k: v.units for k, v in specs.items()}
        self.n_trajectories, self.coords = int(n_trajectories), coords
        self.time = None if time is None else np.asarray(time, dtype=np.float64)
        self.steady = self.time is None
        self.spatial_shape = tuple(len(c) for c in coords.values())
        self.axes = list(coords)
        self.attrs = dict(attrs or {})
        self.boundary_conditions = dict(self.attrs.get("boundary_conditions", {a: "unspecified" for a in coords}))
        self.stats = dict(stats or {})
        self.diff_stats: dict = {}
        self.check_finite = check_finite
        self._h5, self._pid = None, None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_h5"} | {"_h5": None}

    def _file(self):
        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid = open_h5(self.path), os.getpid()
        return self._h5

    def is_static(self, name: str) -> bool:
        return self.steady or self.roles[name] in ("coefficient", "forcing", "source")

    def read(self, name: str, i: int, t: int | None = None) -> np.ndarray:
        if name not in self.specs:
            raise DataError(f"{self.path}: no variable {name!r}; the file has {self.variables}")
        spec = self.specs[name]
        ds_name = spec.dataset.format(key=self.keys[i]) if self.keys else spec.dataset
        index: list[Any] = []
        channels = iter(spec.channel)
        for a in spec.axes:
            index.append({"n": i, "t": t, "c": None, "s": slice(None)}[a] if a != "c" else next(channels))
        try:
            out = np.asarray(self._file()[ds_name][tuple(index)], dtype=np.float32)
        except KeyError:
            raise DataError(f"{self.path}: dataset {ds_name!r} (variable {name!r}) is missing") from None
        except OSError as e:
            raise DataError(f"{self.path}: cannot read variable {name!r} at trajectory {i}, time {t} ({e}); the "
                            "file is truncated or corrupt") from None
        if out.shape != self.spatial_shape:
            raise DataError(f"{self.path}: variable {name!r} at trajectory {i} has shape {out.shape}; expected "
                            f"{self.spatial_shape} (axes {self.axes})")
        if self.check_finite and not np.isfinite(out).all():
            where = "" if self.is_static(name) else f", time index {t}"
            raise DataError(f"{self.path}: variable {name!r} has NaN/Inf at trajectory {i}{where}")
        return out

    def snapshot(self, i: int, t: int | None = None, variables: list[str] | None = None) -> dict[str, np.ndarray]:
        return {v: self.read(v, i, t) for v in (variables or self.variables)}

    def trajectory(self, i: int, variables: list[str] | None = None) -> dict[str, np.ndarray]:
        out = {}
        for v in variables or self.variables:
            if self.is_static(v):
                out[v] = self.read(v, i)
            else:
                out[v] = np.stack([self.read(v, i, t) for t in range(len(self.time))])
        return out

    def compute_stats(self) -> dict:
        """Mean/std per variable in one streaming pass (float64); reads the whole file."""
        from sciformer.data.store import _combine, _mean_std, _moments

        acc = {v: [0.0, 0.0, 0.0] for v in self.variables}
        for i in range(self.n_trajectories):
            for v, arr in self.trajectory(i).items():
                acc[v] = _combine(acc[v], _moments(arr))
        self.stats = {v: dict(zip(("mean", "std"), _mean_std(m))) for v, m in acc.items()}
        return self.stats

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, variables={self.variables}, n_trajectories={self.n_trajectories})"


def convert(source: ArraySource, out: str | os.PathLike, compressor: str | None = "lz4",
            progress: bool = True) -> Path:
    """Write a source as a canonical store (resumable and atomic through FieldStoreWriter)."""
    from sciformer.data.store import FieldStoreWriter

    variables = {v: {"role": source.roles[v], "units": source.units[v]} for v in source.variables}
    attrs = {**source.attrs, "boundary_conditions": source.boundary_conditions,
             "converted_from": {"path": os.path.abspath(source.path), "format": type(source).__name__}}
    w = FieldStoreWriter(out, variables, source.n_trajectories, source.time, source.coords, attrs,
                         compressor=compressor)
    remaining = [i for i in range(source.n_trajectories) if not w.is_done(i)]
    from rich.progress import Progress

    from sciformer.io import DiskFullError

    try:
        with Progress(disable=not progress) as bar:
            task = bar.add_task(f"converting {Path(source.path).name}", total=len(remaining))
            for i in remaining:
                w.write_trajectory(i, source.trajectory(i))
                bar.advance(task)
        return w.finalize()
    except DiskFullError:
        w.abort()  # a full disk leaves nothing partial behind
        raise
    finally:
        w.release()
