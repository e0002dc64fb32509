"""A Well dataset directory read in place: one lazy source per split (``data/train``, ``data/valid``, ``data/test``).

Layout (the_well ``WellDataset``; shared/anchors/landscape-2026.md §4)::

    <dataset>/stats.yaml                   mean/std per field (per component for vectors and tensors)
    <dataset>/data/{train,valid,test}/*.hdf5 (or *.h5)

A split's files are taken in sorted path order, as ``WellDataset`` does, and their trajectories concatenated:
trajectory ``k`` of the collection is trajectory ``k − offset[f]`` of file ``f``. Each file is a lazy
:class:`~sciformer.data.formats.source.ArraySource` from :func:`~sciformer.data.formats.well.open_well`, which
opens its HDF5 handle on the first read in each process (one handle per loader worker per file, only for the
files that worker reads; at most ``max_open`` stay open, least recently used closed first). ArraySource keeps
h5py's dataset objects and reads ``[i, t]`` contiguously before selecting a component in numpy: 4x the pairs/s
of plain ``f[name][i, t, :, :, c]`` reads on 128² fields.

Opening a collection reads every file's metadata once; the result (each file's source description) is cached by
:mod:`~sciformer.data.formats.stats_cache` keyed by the files' sizes and mtimes, so later opens (every DDP rank,
every run) touch no HDF5 file until they read a sample. Statistics come from ``stats.yaml``; without it, one
streaming pass over the training split computes them (cached too).
"""

from __future__ import annotations

import dataclasses
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from sciformer.data.formats import stats_cache
from sciformer.data.formats.source import ArraySource, VarSpec, convert
from sciformer.errors import DataError

SPLITS = ("train", "valid", "test")
SUFFIXES = (".hdf5", ".h5")


def split_files(root: str | os.PathLike, split: str) -> list[str]:
    """The HDF5 files of one split, in WellDataset's order (sorted full paths)."""
    folder = Path(root) / "data" / split
    if not folder.is_dir():
        raise DataError(f"{root}: no data/{split} folder; a Well dataset directory holds "
                        "data/{train,valid,test}/*.hdf5 (and stats.yaml)")
    files = sorted(str(p) for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{folder}: no *.hdf5 or *.h5 files")
    return files


def is_well_directory(path: str | os.PathLike) -> bool:
    """A local folder with ``data/<split>/`` holding HDF5 files for at least one split."""
    p = Path(path)
    if "://" in str(path) or not (p / "data").is_dir():
        return False
    return any((p / "data" / s).is_dir() and any(f.suffix in SUFFIXES for f in (p / "data" / s).iterdir())
               for s in SPLITS)


# ---- a source's description as JSON (the cached index) ----------------------------------------------
def _encode(x):
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise TypeError(f"array of dtype {x.dtype}")
        return {"__ndarray__": x.ravel().tolist(), "dtype": x.dtype.str, "shape": list(x.shape)}
    if isinstance(x, VarSpec):
        return {"__varspec__": {f.name: _encode(getattr(x, f.name)) for f in dataclasses.fields(x)}}
    if isinstance(x, tuple):
        return {"__tuple__": [_encode(v) for v in x]}
    if isinstance(x, dict):
        if not all(isinstance(k, str) for k in x):
            raise TypeError("non-string dict keys")
        return {k: _encode(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_encode(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if x is None or isinstance(x, (str, bool, int, float)):
        return x
    raise TypeError(f"cannot describe a {type(x).__name__}")


def _decode(x):
    if isinstance(x, list):
        return [_decode(v) for v in x]
    if not isinstance(x, dict):
        return x
    if "__ndarray__" in x:
        return np.asarray(x["__ndarray__"], dtype=np.dtype(x["dtype"])).reshape(x["shape"])
    if "__varspec__" in x:
        return VarSpec(**{k: _decode(v) for k, v in x["__varspec__"].items()})
    if "__tuple__" in x:
        return tuple(_decode(v) for v in x["__tuple__"])
    return {k: _decode(v) for k, v in x.items()}


def _describe(source: ArraySource) -> dict:
    state = {k: v for k, v in source.__getstate__().items() if k not in ("_h5", "_pid", "_datasets")}
    return _encode(state)


def _restore(description: dict) -> ArraySource:
    source = ArraySource.__new__(ArraySource)
    source.__setstate__(_decode(description))
    return source


def _open_files(files: list[str], stats: str | None) -> list[ArraySource]:
    from sciformer.data.formats.well import open_well

    return [open_well(f, stats=stats) for f in files]


# ---- the collection ---------------------------------------------------------------------------------
class WellCollection:
    """One split of a Well dataset directory as a single lazy source (FieldStore's read interface).

    Args:
        root: the dataset directory (holding ``data/`` and ``stats.yaml``).
        split: ``train``, ``valid`` or ``test``.
        stats: another ``stats.yaml`` (default ``<root>/stats.yaml``).
        max_open: most HDF5 handles kept open per process.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", stats: str | None = None,
                 max_open: int = 64):
        if split not in SPLITS:
            raise DataError(f"{root}: unknown split {split!r}; The Well's splits are {list(SPLITS)}")
        self.root, self.split, self.max_open = str(root), split, int(max_open)
        self.files = split_files(root, split)
        self.path = str(Path(root) / "data" / split)
        stats_file = Path(stats) if stats else Path(root) / "stats.yaml"
        watched = self.files + ([str(stats_file)] if stats_file.is_file() else [])
        try:
            index = stats_cache.cached(self.path, "well-index", watched,
                                       lambda: [_describe(s) for s in _open_files(self.files, stats)],
                                       extra={"stats": str(stats_file)})
            self.parts = [_restore(d) for d in index]
        except TypeError:  # a source this version cannot describe as JSON: open every file (no cache)
            self.parts = _open_files(self.files, stats)
        self._check()
        first = self.parts[0]
        self.variables, self.roles, self.units = list(first.variables), dict(first.roles), dict(first.units)
        self.coords, self.axes, self.spatial_shape = first.coords, list(first.axes), tuple(first.spatial_shape)
        self.time, self.steady = first.time, first.steady
        self.attrs = {**first.attrs, "well_split": split, "well_files": [Path(f).name for f in self.files]}
        self.boundary_conditions = dict(first.boundary_conditions)
        self.stats = dict(first.stats)
        self.diff_stats: dict = {}
        counts = [int(p.n_trajectories) for p in self.parts]
        self.offsets = np.cumsum([0] + counts)
        self.n_trajectories = int(self.offsets[-1])
        self.trajectory_time = self._trajectory_time()
        self._open: OrderedDict[int, None] = OrderedDict()
        self._pid = None

    def _check(self) -> None:
        """Every file must describe the same data set: variables, roles, grid, number of snapshots and boundary
        conditions (time grids may differ between files: they become per-trajectory times)."""
        first = self.parts[0]
        for f, p in zip(self.files[1:], self.parts[1:]):
            problems = []
            if list(p.variables) != list(first.variables) or p.roles != first.roles:
                problems.append(f"variables {p.variables} (roles {p.roles}) vs {first.variables}")
            if tuple(p.spatial_shape) != tuple(first.spatial_shape):
                problems.append(f"grid {tuple(p.spatial_shape)} vs {tuple(first.spatial_shape)}")
            if (p.time is None) != (first.time is None) or (p.time is not None and len(p.time) != len(first.time)):
                problems.append(f"{'no' if p.time is None else len(p.time)} snapshots vs "
                                f"{'no' if first.time is None else len(first.time)}")
            if p.boundary_conditions != first.boundary_conditions:
                problems.append(f"boundary conditions {p.boundary_conditions} vs {first.boundary_conditions}")
            if problems:
                raise DataError(f"{f}: does not match {self.files[0]} in the same split ({'; '.join(problems)}); "
                                "one split folder must hold files of one data set")

    def _trajectory_time(self) -> np.ndarray | None:
        """[N, T] snapshot times when any file has per-trajectory times or the files' grids differ, else None."""
        if self.steady:
            return None
        rows = [getattr(p, "trajectory_time", None) for p in self.parts]
        if all(r is None for r in rows) and all(np.array_equal(p.time, self.time) for p in self.parts):
            return None
        return np.concatenate([r if r is not None else np.tile(p.time, (int(p.n_trajectories), 1))
                               for p, r in zip(self.parts, rows)])

    def __getstate__(self):  # the parts drop their handles themselves (ArraySource.__getstate__)
        return {k: v for k, v in self.__dict__.items() if k != "_open"} | {"_open": OrderedDict()}

    # ---- reads ---------------------------------------------------------------------------------------
    def locate(self, i: int) -> tuple[int, int]:
        """(file index, trajectory within that file) of collection trajectory ``i``."""
        if not 0 <= i < self.n_trajectories:
            raise DataError(f"{self.path}: trajectory {i} outside [0, {self.n_trajectories})")
        f = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return f, int(i - self.offsets[f])

    def _part(self, f: int) -> ArraySource:
        """File ``f``'s source; it opens its handle on its first read in this process. Beyond ``max_open``
        files read here, the least recently read one is closed."""
        if self._pid != os.getpid():
            self._open, self._pid = OrderedDict(), os.getpid()
        self._open[f] = None
        self._open.move_to_end(f)
        while len(self._open) > self.max_open:
            old, _ = self._open.popitem(last=False)
            self.parts[old].close()
        return self.parts[f]

    def close(self) -> None:
        """Close this process's HDF5 handles (they reopen on the next read)."""
        for part in self.parts:
            part.close()
        self._open = OrderedDict()

    def is_static(self, name: str) -> bool:
        return self.parts[0].is_static(name)

    def read(self, name: str, i: int, t: int | None = None) -> np.ndarray:
        f, j = self.locate(i)
        return self._part(f).read(name, j, t)

    def read_into(self, name: str, i: int, t: int | None, out: np.ndarray) -> None:
        f, j = self.locate(i)
        self._part(f).read_into(name, j, t, out)

    def snapshot(self, i: int, t: int | None = None, variables: list[str] | None = None) -> dict[str, np.ndarray]:
        return {v: self.read(v, i, t) for v in (variables or self.variables)}

    def trajectory(self, i: int, variables: list[str] | None = None) -> dict[str, np.ndarray]:
        f, j = self.locate(i)
        return self._part(f).trajectory(j, variables)

    def compute_stats(self) -> dict:
        """Mean/std per variable over the whole split in one streaming pass (float64, trajectory order: the
        statistics a store converted from this split gets)."""
        from sciformer.data.store import _combine, _mean_std, _moments

        acc = {v: [0.0, 0.0, 0.0] for v in self.variables}
        for i in range(self.n_trajectories):
            for v, arr in self.trajectory(i).items():
                acc[v] = _combine(acc[v], _moments(arr))
        self.stats = {v: dict(zip(("mean", "std"), _mean_std(m))) for v, m in acc.items()}
        return self.stats

    def __repr__(self) -> str:
        return (f"WellCollection({self.root!r}, split={self.split!r}, files={len(self.files)}, "
                f"variables={self.variables}, n_trajectories={self.n_trajectories})")


def open_well_directory(root: str | os.PathLike, split: str = "train", stats: str | None = None,
                        **_: Any) -> WellCollection:
    """One split of a Well dataset directory; statistics from ``stats.yaml`` or one cached streaming pass."""
    c = WellCollection(root, split, stats=stats)
    if not c.stats or set(c.stats) != set(c.variables):
        stats_cache.source_stats(c, c.files)
    return c


def convert_well_directory(src: Path, out: Path, compressor: str | None = "lz4", *, split: str = "train",
                           stats: str | None = None) -> Path:
    """``sciformer data convert DATASET_DIR OUT.zarr --from well-dir --option split=train``: one split, all its
    files, as one canonical store (trajectories in the collection's order)."""
    return convert(open_well_directory(src, split=split, stats=stats), out, compressor=compressor)
