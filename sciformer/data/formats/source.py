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

    ``constant``: spatial axes (store order) along which the field does not vary; ``dropped``: whether the
    dataset omits those axes (The Well's ``dim_varying`` layout, a Helmholtz ``bc`` scalar) rather than storing
    them with length 1. Either way the read is broadcast to the full grid. ``transpose``: a permutation of the
    spatial axes applied after reading (Poseidon's NS-SL, read transposed by its dataset class).
    """

    dataset: str
    axes: str
    role: str = "state"
    channel: tuple[int, ...] = ()
    units: str = "1"
    constant: tuple[int, ...] = ()
    dropped: bool = False
    transpose: tuple[int, ...] = ()


def open_h5(path):
    """h5py handle with one clear error for missing, truncated or non-HDF5 files.

    ``path``: a local path, an fsspec URL (``s3://…``, ``https://…``, ``memory://…``: opened with
    ``fsspec.open`` and read through the file object, so only the bytes h5py asks for are fetched), or an
    open binary file object. Closing the handle closes the fsspec file too.
    """
    import h5py

    fileobj, name = None, getattr(path, "path", None) or getattr(path, "name", None) or repr(path)
    if hasattr(path, "read") and hasattr(path, "seek"):
        fileobj = path
    elif "://" in str(path):
        import fsspec

        name = str(path)
        try:
            fileobj = fsspec.open(name, "rb").open()
        except FileNotFoundError:
            raise DataError(f"{name}: no such file") from None
        except (OSError, ValueError, ImportError) as e:  # unknown protocol, missing fsspec backend, no access
            raise DataError(f"{name}: cannot open through fsspec ({type(e).__name__}: {e})") from None
    else:
        name = str(path)
        if not Path(path).exists():
            raise DataError(f"{path}: no such file")
        if Path(path).is_dir():
            raise DataError(f"{path}: a folder, not an HDF5/NetCDF file; a Well dataset directory "
                            "(data/{train,valid,test}/*.hdf5) is named directly as a store, or converted one split "
                            "at a time with sciformer.data.formats.well_collection.convert_well_directory")
    try:
        if fileobj is None:
            return h5py.File(path, "r")
        handle = h5py.File(fileobj, "r")
    except OSError as e:
        if fileobj is not None and fileobj is not path:
            fileobj.close()
        raise DataError(f"{name}: cannot open as HDF5/NetCDF4 ({e}); the file is truncated or in another format: "
                        "re-download or re-export it") from None
    if fileobj is not path:  # we opened it: close it with the h5py handle
        close = handle.close

        def close_both():
            close()
            fileobj.close()

        handle.close = close_both
    return handle


class ArraySource:
    """Lazy field source over an HDF5 file described by :class:`VarSpec` entries (picklable; reopens per process).

    Reads are tuned for one snapshot at a time: the file is opened once per process and its h5py dataset objects
    are kept (h5py builds a new one on every ``f[name]``, which costs about as much as reading a 128² snapshot),
    and the leading integer indices (trajectory, time, leading channels) are read as one contiguous hyperslab
    before a trailing component is selected in numpy (``ds[i, t]`` then ``[..., c]``: HDF5's strided selection
    of one component of ``[..., D]`` is several times slower). The values are the same, bit for bit.
    """

    MAX_DATASETS = 4096  # cached dataset objects per process (files with one group per sample have many)

    def __init__(self, path, specs: dict[str, VarSpec], n_trajectories: int, time: np.ndarray | None,
                 coords: dict[str, np.ndarray], attrs: dict[str, Any] | None = None, keys: list[str] | None = None,
                 stats: dict | None = None, check_finite: bool = True, trajectory_time: np.ndarray | None = None):
        """``stats``: known statistics (all or some variables; a streaming pass fills in the rest and keeps
        these). ``trajectory_time`` [N, T]: per-trajectory snapshot times when trajectories have different
        time grids (``time`` is then trajectory 0's row); None when all share ``time``."""
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
        self.presets = dict(self.stats)
        self.trajectory_time = None if trajectory_time is None else np.asarray(trajectory_time, dtype=np.float64)
        if self.trajectory_time is not None and (self.time is None or self.trajectory_time.shape !=
                                                 (self.n_trajectories, len(self.time))):
            raise DataError(f"{self.path}: per-trajectory times have shape {self.trajectory_time.shape}; expected "
                            f"{(self.n_trajectories, 0 if self.time is None else len(self.time))}")
        self.diff_stats: dict = {}
        self.check_finite = check_finite
        self._reset()

    # ---- the per-process handle ----------------------------------------------------------------------
    def _reset(self) -> None:
        """Forget the handle (not closing it): a fresh source, an unpickled one, or one in a new process."""
        self._h5, self._pid, self._datasets = None, None, {}

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_h5", "_pid", "_datasets")} | \
            {"_h5": None, "_pid": None, "_datasets": {}}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    def _file(self):
        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid, self._datasets = open_h5(self.path), os.getpid(), {}
        return self._h5

    def _dataset(self, name: str):
        """This process's h5py object for ``name`` (looked up once)."""
        f = self._file()
        ds = self._datasets.get(name)
        if ds is None:
            ds = f[name]
            if len(self._datasets) >= self.MAX_DATASETS:
                self._datasets.clear()
            self._datasets[name] = ds
        return ds

    def close(self) -> None:
        """Close this process's handle (it reopens on the next read); a handle inherited through fork is only
        dropped, since the parent still uses it."""
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._reset()

    def is_static(self, name: str) -> bool:
        return self.steady or self.roles[name] in ("coefficient", "forcing", "source")

    def _select(self, name: str, i: int, t: int | None) -> np.ndarray:
        """Variable ``name`` at trajectory ``i`` (time index ``t``) in the file's dtype, on the spatial grid
        (possibly a view: transposed or broadcast along constant axes)."""
        if name not in self.specs:
            raise DataError(f"{self.path}: no variable {name!r}; the file has {self.variables}")
        spec = self.specs[name]
        ds_name = spec.dataset.format(key=self.keys[i]) if self.keys else spec.dataset
        index: list[Any] = []
        channels = iter(spec.channel)
        for a in spec.axes:
            index.append({"n": i, "t": t, "s": slice(None)}[a] if a != "c" else next(channels))
        lead = 0  # leading integer indices: one contiguous hyperslab
        while lead < len(index) and isinstance(index[lead], (int, np.integer)):
            lead += 1
        try:
            ds = self._dataset(ds_name)
            if 0 < lead < len(index) and any(isinstance(k, (int, np.integer)) for k in index[lead:]):
                out = np.asarray(ds[tuple(index[:lead])])[tuple(index[lead:])]  # then the component, in numpy
            else:
                out = np.asarray(ds[tuple(index)])
            if spec.dropped:
                out = np.expand_dims(out, spec.constant)
            if spec.transpose:
                out = out.transpose(spec.transpose)
            if spec.constant and out.shape != self.spatial_shape and out.ndim == len(self.spatial_shape) and all(
                    m == n or (m == 1 and a in spec.constant) for a, (m, n) in enumerate(zip(out.shape,
                                                                                             self.spatial_shape))):
                out = np.broadcast_to(out, self.spatial_shape)
        except KeyError:
            raise DataError(f"{self.path}: dataset {ds_name!r} (variable {name!r}) is missing") from None
        except OSError as e:
            raise DataError(f"{self.path}: cannot read variable {name!r} at trajectory {i}, time {t} ({e}); the "
                            "file is truncated or corrupt") from None
        if out.shape != self.spatial_shape:
            raise DataError(f"{self.path}: variable {name!r} at trajectory {i} has shape {out.shape}; expected "
                            f"{self.spatial_shape} (axes {self.axes})")
        return out

    def _check_finite(self, name: str, out: np.ndarray, i: int, t: int | None) -> None:
        if self.check_finite and not np.isfinite(out).all():
            where = "" if self.is_static(name) else f", time index {t}"
            raise DataError(f"{self.path}: variable {name!r} has NaN/Inf at trajectory {i}{where}")

    def read(self, name: str, i: int, t: int | None = None) -> np.ndarray:
        """One snapshot as a new float32 C-contiguous array of the spatial shape."""
        out = np.ascontiguousarray(self._select(name, i, t), dtype=np.float32)
        if not out.flags.owndata:  # a view of a larger read (``ds[i, t]``): do not keep all of it alive
            out = out.copy()
        self._check_finite(name, out, i, t)
        return out

    def read_into(self, name: str, i: int, t: int | None, out: np.ndarray) -> None:
        """Like :meth:`read`, writing into ``out`` (float32, spatial shape; FieldPairs' hot loop)."""
        out[...] = self._select(name, i, t)
        self._check_finite(name, out, i, t)

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
        self.stats = {v: dict(zip(("mean", "std"), _mean_std(m))) for v, m in acc.items()} | getattr(self, "presets", {})
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
                         compressor=compressor, trajectory_time=getattr(source, "trajectory_time", None))
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
