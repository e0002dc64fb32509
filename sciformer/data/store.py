"""Canonical gridded-field store: Zarr v3, one array per physical field, one snapshot per chunk.

Layout (readable by ``xarray.open_zarr(path, chunks=None)`` and by :class:`FieldStore`)::

    root attrs: layout="fields", pde, boundary_conditions {axis: bc}, domain, generator, ...
    trajectory [N]        int64 coordinate
    time [T]              float64 coordinate (absent in steady stores)
    trajectory_time [N, T]  float64, only when trajectories have different time grids (``time`` = row 0)
    x [X], y [Y] (, z)    float64 coordinates
    <state>  [N, T, X, Y(, Z)]   role state | solution; chunk (1, 1, X, Y(, Z))
    <static> [N, X, Y(, Z)]      role coefficient | forcing | source (and solution in steady stores)
    per-variable attrs: units, role, mean, std (+ diff_mean, diff_std of one-step differences for states)

:class:`FieldStoreWriter` writes under a temporary sibling, keeps a per-trajectory progress record (which holds
that trajectory's streaming statistics), resumes an interrupted write, and renames the finished store into place.
Statistics are combined in trajectory order at ``finalize``, so a resumed store equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import warnings
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sciformer.data.conventions import ROLES, TIME_ROLES, is_static
from sciformer.errors import DataError
from sciformer.io import (
    DiskFullError,
    ExclusiveLock,
    disk_full_error,
    is_disk_full,
    recover_dir,
    recover_for_reading,
    replace_dir,
)

LAYOUT = "fields"
BOUNDARY_CONDITIONS = ("periodic", "dirichlet", "neumann", "open", "wall", "unspecified")
RESERVED = ("trajectory", "time", "trajectory_time")
# Root attribute set by the writers: every chunk was written, all-fill ones included (zarr skips those by
# default), so a missing chunk file is damage, never a fill value.
COMPLETE = "all_chunks_written"


COMPRESSORS = ("lz4", "zstd", None)


def _codecs(compressor: str | None):
    """lz4: Blosc-LZ4 with byte shuffle (default: decodes ~5-10x faster than zstd at a similar ratio on
    float32 fields, measured on smooth, piecewise-constant and front-like 128² fields); zstd: smaller for some
    data, slower to decode; None: raw little-endian chunks."""
    if compressor is None:
        return None
    if compressor == "lz4":
        from zarr.codecs import BloscCodec

        return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]
    if compressor == "zstd":
        from zarr.codecs import ZstdCodec

        return [ZstdCodec(level=1)]
    raise DataError(f"unknown compressor {compressor!r}; use one of {COMPRESSORS}")


# ---- streaming statistics (Chan et al.'s pairwise update) ------------------------------------
def _moments(a: np.ndarray) -> list[float]:
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return [0.0, 0.0, 0.0]
    m = float(a.mean())
    return [float(a.size), m, float(((a - m) ** 2).sum())]


def _combine(x: list[float], y: list[float]) -> list[float]:
    n = x[0] + y[0]
    if n == 0:
        return [0.0, 0.0, 0.0]
    d = y[1] - x[1]
    return [n, x[1] + d * y[0] / n, x[2] + y[2] + d * d * x[0] * y[0] / n]


def _mean_std(m: list[float]) -> tuple[float, float]:
    return float(m[1]), float(np.sqrt(m[2] / m[0])) if m[0] else 0.0


class FieldStoreWriter:
    """Write a canonical field store trajectory by trajectory; resumable, atomic.

    Args:
        path: the final store (a local directory ``*.zarr``).
        variables: ``{name: {"role": ..., "units": ..., **extra attrs}}`` in the store's variable order.
        n_trajectories: number of trajectories N.
        time: snapshot times [T] (uniform or not), or None for a steady store.
        coords: spatial coordinates in axis order, e.g. ``{"x": xs, "y": ys}``.
        attrs: root attributes (pde, boundary_conditions {axis: bc}, domain, generator, ...).
        compressor: "lz4" (Blosc-LZ4 + shuffle, default), "zstd", or None (uncompressed chunks).
        overwrite: replace an existing finished store at ``path`` (default: reuse it if the schema matches).
        trajectory_time: [N, T] per-trajectory snapshot times, when trajectories have different time grids
            (``time`` should then be row 0); the lead time uses each trajectory's row
            (:func:`sciformer.data.conventions.snapshot_times`).

    The instance is picklable and opens the zarr group lazily, so trajectories may be written from worker
    processes (each writes its own chunks and progress record). The creating process holds the exclusive
    write lock of ``path`` (:func:`sciformer.io.exclusive_lock`) from construction until :meth:`finalize` or
    :meth:`abort` (or until it is garbage-collected): a second writer process is refused. A full disk raises
    :class:`~sciformer.io.DiskFullError`; :func:`write_store` and ``run_build`` then remove the partial store.
    """

    def __init__(self, path: str | os.PathLike, variables: Mapping[str, Mapping[str, Any]], n_trajectories: int,
                 time: np.ndarray | None, coords: Mapping[str, np.ndarray], attrs: Mapping[str, Any] | None = None,
                 compressor: str | None = "lz4", overwrite: bool = False, trajectory_time: np.ndarray | None = None):
        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.name}.partial")
        self.variables = {str(k): dict(v) for k, v in variables.items()}
        self.n = int(n_trajectories)
        self.time = None if time is None else np.asarray(time, dtype=np.float64)
        self.trajectory_time = None if trajectory_time is None else np.asarray(trajectory_time, dtype=np.float64)
        self.coords = {str(k): np.asarray(v, dtype=np.float64) for k, v in coords.items()}
        self.attrs = dict(attrs or {})
        self.compressor = compressor
        self._validate()
        self.schema = self._schema()
        self._group = None
        self._pid = None
        self._lock = ExclusiveLock(self.path).acquire()
        self._unlock = weakref.finalize(self, self._lock.release)
        try:
            recover_dir(self.path)  # an interrupted replace of a finished store
            self._recover_finalize()
            if self.path.exists():
                if overwrite:
                    return self._start()
                if self._finished_schema_sha() != self._sha(self.schema):
                    raise DataError(f"{self.path}: a store with a different schema exists; delete it, pick "
                                    "another path, or pass overwrite=True")
                return
            self._start()
        except BaseException as e:
            if is_disk_full(e):
                self.abort()
                raise self._disk_full(e) from None
            self.release()
            raise

    # ---- schema ------------------------------------------------------------------------------
    @property
    def steady(self) -> bool:
        return self.time is None

    def _validate(self) -> None:
        if self.n < 1:
            raise DataError(f"{self.path}: n_trajectories must be ≥ 1, got {self.n}")
        if not 1 <= len(self.coords) <= 3:
            raise DataError(f"{self.path}: coords must name 1 to 3 spatial axes, got {list(self.coords)}")
        if not self.variables:
            raise DataError(f"{self.path}: no variables given")
        for name, spec in self.variables.items():
            if name in RESERVED or name in self.coords:
                raise DataError(f"{self.path}: variable name {name!r} clashes with a dimension name")
            role = spec.get("role")
            if role not in ROLES:
                raise DataError(f"{self.path}: variable {name!r} has role {role!r}; expected one of {ROLES}")
            spec.setdefault("units", "1")
        if self.steady and not any(v["role"] in TIME_ROLES for v in self.variables.values()):
            raise DataError(f"{self.path}: a steady store needs a variable with role 'solution'")
        if self.time is not None and (self.time.ndim != 1 or len(self.time) < 1):
            raise DataError(f"{self.path}: time must be a 1-D array of snapshot times")
        if self.trajectory_time is not None and (self.time is None or self.trajectory_time.shape != (
                self.n, len(self.time)) or not np.isfinite(self.trajectory_time).all()):
            raise DataError(f"{self.path}: trajectory_time must be finite with shape [n_trajectories, T] = "
                            f"{(self.n, 0 if self.time is None else len(self.time))}; got "
                            f"{self.trajectory_time.shape}")
        bcs = self.attrs.setdefault("boundary_conditions", {a: "unspecified" for a in self.coords})
        for axis, bc in bcs.items():
            if axis not in self.coords:
                raise DataError(f"{self.path}: boundary condition for unknown axis {axis!r}")
            for side in [bc] if isinstance(bc, str) else list(bc):
                if side not in BOUNDARY_CONDITIONS:
                    raise DataError(f"{self.path}: boundary condition {side!r} on axis {axis!r}; expected one of "
                                    f"{BOUNDARY_CONDITIONS} (or a [lower, upper] pair)")
        try:
            json.dumps(self.attrs)
            json.dumps(self.variables)
        except TypeError as e:
            raise DataError(f"{self.path}: attrs and variable specs must be JSON-serialisable ({e})") from None

    def _schema(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for arr in [self.time, self.trajectory_time, *self.coords.values()]:
            if arr is not None:
                digest.update(np.ascontiguousarray(arr).tobytes())
        return {"variables": self.variables, "n_trajectories": self.n, "steady": self.steady,
                "shape": {k: len(v) for k, v in self.coords.items()} | ({} if self.steady else {"time": len(self.time)}),
                "coords_sha256": digest.hexdigest(), "attrs": self.attrs, "compressor": self.compressor}

    @staticmethod
    def _read_existing_schema(file: Path) -> dict | None:
        try:
            return json.loads(file.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    @staticmethod
    def _sha(schema: dict) -> str:
        return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()

    def _finished_schema_sha(self) -> str | None:
        try:
            return json.loads((self.path / "zarr.json").read_text())["attributes"].get("schema_sha256")
        except (OSError, KeyError, json.JSONDecodeError):
            return None

    def _shape(self, name: str) -> tuple[int, ...]:
        spatial = tuple(len(v) for v in self.coords.values())
        if is_static(self.variables[name]["role"], self.steady):
            return (self.n, *spatial)
        return (self.n, len(self.time), *spatial)

    def _dims(self, name: str) -> list[str]:
        if is_static(self.variables[name]["role"], self.steady):
            return ["trajectory", *self.coords]
        return ["trajectory", "time", *self.coords]

    # ---- partial store ---------------------------------------------------------------------------
    def _start(self) -> None:
        """Create the partial store, or check that the existing one has the same schema (resume)."""
        schema_file = self.partial / "schema.json"
        if self.partial.exists():
            if self._read_existing_schema(schema_file) == self.schema:
                return
            shutil.rmtree(self.partial)  # another schema (or a crash during creation): start over
        import zarr

        tmp = self.partial.with_name(self.partial.name + ".creating")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "progress").mkdir(parents=True)
        g = zarr.open_group(str(tmp / "store.zarr"), mode="w", zarr_format=3)
        with _write_empty_chunks():
            self._write_coords(g)
        for name in self.variables:
            shape = self._shape(name)
            g.create_array(name, shape=shape, chunks=(1,) * (len(shape) - len(self.coords)) + shape[-len(self.coords):],
                           dtype="float32", compressors=_codecs(self.compressor), fill_value=0.0,
                           dimension_names=self._dims(name))
        (tmp / "schema.json").write_text(json.dumps(self.schema, indent=1))
        os.replace(tmp, self.partial)

    def _write_coords(self, g) -> None:
        self._coord(g, "trajectory", np.arange(self.n, dtype=np.int64))
        if not self.steady:
            self._coord(g, "time", self.time)
        if self.trajectory_time is not None:
            a = g.create_array("trajectory_time", shape=self.trajectory_time.shape, chunks=self.trajectory_time.shape,
                               dtype="float64", compressors=None, dimension_names=["trajectory", "time"])
            a[...] = self.trajectory_time
        for axis, values in self.coords.items():
            self._coord(g, axis, values)

    def _recover_finalize(self) -> None:
        """After a crash inside :meth:`finalize`: if the new store was already swapped in (``path`` is the
        directory recorded in ``finalizing.json``), the partial holds the old one: delete it. Otherwise the
        partial is intact and the next ``finalize`` redoes the swap."""
        record = self.partial / "finalizing.json"
        if not record.exists():
            return
        try:
            swapped = os.stat(self.path).st_ino == json.loads(record.read_text())["inode"]
        except (OSError, KeyError, ValueError):
            swapped = False
        if swapped:
            shutil.rmtree(self.partial)

    def _disk_full(self, e: OSError):
        """The error for a full disk; the writing process removes the partial store (:meth:`abort`)."""
        return disk_full_error(self.path, e)

    @staticmethod
    def _coord(g, name: str, values: np.ndarray) -> None:
        a = g.create_array(name, shape=values.shape, chunks=values.shape, dtype=values.dtype, compressors=None,
                           dimension_names=[name])
        a[...] = values

    def _open(self):
        if self._group is None or self._pid != os.getpid():
            import zarr

            self._group = zarr.open_group(str(self.partial / "store.zarr"), mode="r+", zarr_format=3)
            self._pid = os.getpid()
        return self._group

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_group", "_lock", "_unlock")} | \
            {"_group": None, "_lock": None, "_unlock": None}

    def release(self) -> None:
        """Release the write lock (done by :meth:`finalize` and :meth:`abort`)."""
        if self._unlock is not None:
            self._unlock()

    def abort(self) -> None:
        """Remove the partial store (nothing half-written is left) and release the lock."""
        self._group = None
        shutil.rmtree(self.partial, ignore_errors=True)
        shutil.rmtree(self.partial.with_name(self.partial.name + ".creating"), ignore_errors=True)
        self.release()

    # ---- public API ------------------------------------------------------------------------------
    def is_done(self, i: int) -> bool:
        """True if trajectory ``i`` is already written (in the partial or the finished store)."""
        if not self.partial.exists() and self.path.exists():
            return True
        return (self.partial / "progress" / f"{int(i)}.json").exists()

    def write_trajectory(self, i: int, fields: Mapping[str, np.ndarray]) -> None:
        """Write trajectory ``i``: state arrays [T, *spatial], static arrays [*spatial]. Idempotent."""
        i = int(i)
        if not 0 <= i < self.n:
            raise DataError(f"{self.path}: trajectory index {i} outside [0, {self.n})")
        if not self.partial.exists():
            raise DataError(f"{self.path}: the store is already finalized; open it with FieldStore")
        missing = [v for v in self.variables if v not in fields]
        extra = [v for v in fields if v not in self.variables]
        if missing or extra:
            raise DataError(f"{self.path}: trajectory {i}: missing variables {missing}, unknown variables {extra}")
        g, stats = self._open(), {}
        for name, spec in self.variables.items():
            arr = np.asarray(fields[name])
            shape = self._shape(name)[1:]
            if arr.shape != shape:
                raise DataError(f"{self.path}: variable {name!r} trajectory {i} has shape {arr.shape}; expected "
                                f"{shape} (dims {self._dims(name)[1:]})")
            arr = arr.astype(np.float32, copy=False)
            if not np.isfinite(arr).all():
                idx = np.argwhere(~np.isfinite(arr))[0].tolist()
                raise DataError(f"{self.path}: variable {name!r} trajectory {i} has NaN/Inf at index {idx}")
            try:
                with _write_empty_chunks():
                    g[name][i] = arr
            except OSError as e:
                if is_disk_full(e):
                    raise self._disk_full(e) from None
                raise
            entry = {"moments": _moments(arr)}
            if not is_static(spec["role"], self.steady):
                entry["diff_moments"] = _moments(np.diff(arr.astype(np.float64), axis=0))
            stats[name] = entry
        record = self.partial / "progress" / f"{i}.json"
        tmp = record.with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(stats))
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if is_disk_full(e):
                raise self._disk_full(e) from None
            raise
        os.replace(tmp, record)  # written last: a trajectory counts as done only once all its chunks are

    def finalize(self) -> Path:
        """Aggregate statistics, write attributes and consolidated metadata, swap into place atomically
        (:func:`sciformer.io.replace_dir`), release the lock."""
        if not self.partial.exists() and self.path.exists():
            self.release()
            return self.path
        try:
            return self._finalize()
        except OSError as e:
            if is_disk_full(e):
                self.abort()
                raise self._disk_full(e) from None
            raise

    def _finalize(self) -> Path:
        remaining = [i for i in range(self.n) if not self.is_done(i)]
        if remaining:
            raise DataError(f"{self.path}: cannot finalize, {len(remaining)} trajectories not written (first: {remaining[0]})")
        import zarr

        records = [json.loads((self.partial / "progress" / f"{i}.json").read_text()) for i in range(self.n)]
        g = self._open()
        for name, spec in self.variables.items():
            attrs = dict(spec)
            total = [0.0, 0.0, 0.0]
            for r in records:
                total = _combine(total, r[name]["moments"])
            attrs["mean"], attrs["std"] = _mean_std(total)
            if "diff_moments" in records[0][name]:
                total = [0.0, 0.0, 0.0]
                for r in records:
                    total = _combine(total, r[name]["diff_moments"])
                attrs["diff_mean"], attrs["diff_std"] = _mean_std(total)
            g[name].attrs.update(attrs)
        g.attrs.update({"layout": LAYOUT, **self.attrs, "steady": self.steady, "variables": list(self.variables),
                        "schema_sha256": self._sha(self.schema), COMPLETE: True})
        store_dir = self.partial / "store.zarr"
        with warnings.catch_warnings():  # zarr notes that consolidated metadata is not in the v3 spec yet
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(str(store_dir))
        self._group = None
        record = self.partial / "finalizing.json"  # lets a crash after the swap be told from one before it
        record.with_suffix(".tmp").write_text(json.dumps({"inode": os.stat(store_dir).st_ino}))
        os.replace(record.with_suffix(".tmp"), record)
        replace_dir(store_dir, self.path)  # a reader always finds a complete store at path
        shutil.rmtree(self.partial)
        self.release()
        return self.path


def write_store(path: str | os.PathLike, data: Mapping[str, np.ndarray], variables: Mapping[str, Mapping[str, Any]],
                time: np.ndarray | None, coords: Mapping[str, np.ndarray], attrs: Mapping[str, Any] | None = None,
                compressor: str | None = "lz4", overwrite: bool = True) -> Path:
    """Write whole arrays (leading trajectory axis) as a store; used by converters and tests."""
    n = len(next(iter(data.values())))
    w = FieldStoreWriter(path, variables, n, time, coords, attrs, compressor=compressor, overwrite=overwrite)
    try:
        for i in range(n):
            if not w.is_done(i):
                w.write_trajectory(i, {k: v[i] for k, v in data.items()})
        return w.finalize()
    except DiskFullError:
        w.abort()
        raise
    finally:
        w.release()


@contextlib.contextmanager
def _write_empty_chunks():
    """Write all-fill chunks too, so that a missing chunk file always means damage."""
    import zarr

    with zarr.config.set({"array.write_empty_chunks": True}):
        yield


# ---- reading ------------------------------------------------------------------------------------
class FieldStore:
    """Lazy reader of a canonical field store (local path or fsspec URL).

    Metadata are read once (consolidated); arrays are read one snapshot chunk at a time. Local stores whose
    chunks use the plain ``bytes`` codec (+ optional ``blosc`` or ``zstd``) are read straight from their chunk files, which
    skips zarr's per-call overhead; anything else goes through zarr. The object is picklable and reopens its
    handle in each process (DataLoader workers).

    A missing or short chunk is a :class:`DataError` naming the store, variable and index, in stores whose
    writer recorded that every chunk was written (``all_chunks_written``, set by :class:`FieldStoreWriter`).
    In other stores zarr's convention holds (an absent chunk is the fill value), with a warning once.
    """

    def __init__(self, path: str | os.PathLike, storage_options: dict | None = None, check_finite: bool = True):
        self.path = str(path)
        self.storage_options = storage_options
        self.check_finite = check_finite
        self._group = None
        self._pid = None
        g = self._open()
        attrs = dict(g.attrs)
        if attrs.get("layout") != LAYOUT:
            raise DataError(f"{self.path}: layout {attrs.get('layout')!r} is not a gridded-field store "
                            f"(expected layout='{LAYOUT}'); convert it with `sciformer data convert`")
        self.attrs = attrs
        self.complete = bool(attrs.get(COMPLETE, False))
        self._warned_missing = False
        members = {name: arr for name, arr in g.arrays()}
        self.steady = "time" not in members
        self.time = None if self.steady else np.asarray(members["time"][...], dtype=np.float64)
        self.trajectory_time = np.asarray(members["trajectory_time"][...], dtype=np.float64) \
            if "trajectory_time" in members and not self.steady else None
        dims_of = {name: list(arr.metadata.dimension_names or []) for name, arr in members.items()}
        found = [n for n in members if n not in RESERVED and dims_of[n] and dims_of[n][0] == "trajectory"]
        order = [v for v in attrs.get("variables", []) if v in found]  # the writer's order
        self.variables = order + sorted(v for v in found if v not in order)
        if not self.variables:
            raise DataError(f"{self.path}: no field variables found")
        first = dims_of[self.variables[0]]
        self.axes = [d for d in first if d not in RESERVED]
        for axis in self.axes:
            if axis not in members:
                raise DataError(f"{self.path}: coordinate {axis!r} is missing")
        self.coords = {a: np.asarray(members[a][...]) for a in self.axes}
        self.spatial_shape = tuple(len(v) for v in self.coords.values())
        self.n_trajectories = int(members[self.variables[0]].shape[0])
        self.roles, self.units, self.stats, self.diff_stats = {}, {}, {}, {}
        for name in self.variables:
            arr, a = members[name], dict(members[name].attrs)
            role = a.get("role")
            if role not in ROLES:
                raise DataError(f"{self.path}: variable {name!r} has role {role!r}; expected one of {ROLES}")
            static = is_static(role, self.steady)
            want = ["trajectory", *self.axes] if static else ["trajectory", "time", *self.axes]
            if dims_of[name] != want:
                raise DataError(f"{self.path}: variable {name!r} has dims {dims_of[name]}; expected {want}")
            shape = (self.n_trajectories, *self.spatial_shape) if static else \
                (self.n_trajectories, len(self.time), *self.spatial_shape)
            if tuple(arr.shape) != shape:
                raise DataError(f"{self.path}: variable {name!r} has shape {tuple(arr.shape)}; expected {shape}")
            self.roles[name], self.units[name] = role, a.get("units", "1")
            if "mean" in a:
                self.stats[name] = {"mean": float(a["mean"]), "std": float(a["std"])}
            if "diff_mean" in a:
                self.diff_stats[name] = {"mean": float(a["diff_mean"]), "std": float(a["diff_std"])}
        self.boundary_conditions = dict(attrs.get("boundary_conditions", {}))
        self._fast = self._fast_paths(members)

    # ---- handles -----------------------------------------------------------------------------
    def _open(self):
        if self._group is None or self._pid != os.getpid():
            import zarr

            if "://" not in self.path and not os.path.exists(self.path):
                recover_for_reading(self.path)  # an interrupted replace left only .NAME.old
            try:
                self._group = zarr.open_group(self.path, mode="r", storage_options=self.storage_options)
            except FileNotFoundError:
                raise DataError(f"{self.path}: no such store") from None
            except Exception as e:  # zarr raises several types for non-stores
                raise DataError(f"{self.path}: not a zarr store ({type(e).__name__}: {e})") from None
            self._pid = os.getpid()
        return self._group

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_group"} | {"_group": None}

    def _fast_paths(self, members) -> dict[str, tuple[str, bool, float]]:
        """Chunk-file reading for local stores with default chunk keys and bytes(+blosc|zstd) codecs."""
        if "://" in self.path or not Path(self.path).is_dir():
            return {}
        out = {}
        for name in self.variables:
            meta = members[name].metadata
            names = [c.to_dict()["name"] for c in meta.codecs]
            little = meta.codecs[0].to_dict().get("configuration", {}).get("endian", "little") == "little"
            key = meta.chunk_key_encoding.to_dict()
            ok_key = key["name"] == "default" and key.get("configuration", {}).get("separator", "/") == "/"
            if names in (["bytes"], ["bytes", "zstd"], ["bytes", "blosc"]) and little and ok_key \
                    and np.dtype(members[name].dtype) == np.dtype("<f4"):
                out[name] = (os.path.join(self.path, name, "c"), names[-1] if len(names) == 2 else None,
                             float(meta.fill_value))
        return out

    # ---- reads -------------------------------------------------------------------------------
    def is_static(self, name: str) -> bool:
        return is_static(self.roles[name], self.steady)

    def _require(self, name: str) -> None:
        if name not in self.roles:
            raise DataError(f"{self.path}: no variable {name!r}; the store has {self.variables}")

    def read(self, name: str, i: int, t: int | None = None) -> np.ndarray:
        """One chunk: variable ``name`` of trajectory ``i`` at snapshot ``t`` (ignored for static variables)."""
        out = np.empty(self.spatial_shape, dtype=np.float32)
        self.read_into(name, i, t, out)
        return out

    def read_into(self, name: str, i: int, t: int | None, out: np.ndarray) -> None:
        """Like :meth:`read`, decoding straight into ``out`` (float32, C-contiguous, spatial shape)."""
        self._require(name)
        index = (i,) if self.is_static(name) else (i, t)
        if name in self._fast:
            self._read_chunk(name, index, out)
        else:
            arr = self._open()[name]
            if self.complete:
                self._require_chunk(arr, name, index)
            out[...] = np.asarray(arr[index], dtype=np.float32)
        # a NaN/Inf makes the (fast, float32) sum non-finite; an overflowing sum of finite values is re-checked
        if self.check_finite and not np.isfinite(_sum(out)) and not np.isfinite(out).all():
            where = "" if len(index) == 1 else f", time index {index[1]}"
            raise DataError(f"{self.path}: variable {name!r} has NaN/Inf at trajectory {index[0]}{where}")

    def _where(self, index: tuple[int, ...]) -> str:
        return f"trajectory {index[0]}" + ("" if len(index) == 1 else f", time index {index[1]}")

    def _missing(self, name: str, index: tuple[int, ...], what: str) -> DataError:
        return DataError(f"{self.path}: variable {name!r} {self._where(index)}: chunk {what} is missing (the store "
                         "is damaged or incomplete; run `sciformer data info --verify` on it, and rebuild or "
                         "reconvert it)")

    def _missing_as_fill(self, name: str, index: tuple[int, ...]) -> None:
        if not self._warned_missing:
            self._warned_missing = True
            warnings.warn(f"{self.path}: variable {name!r} {self._where(index)}: chunk missing, read as the fill "
                          "value (this store does not record that all chunks were written; rewrite it with "
                          "this version to detect damage)", stacklevel=3)

    def _require_chunk(self, arr, name: str, index: tuple[int, ...]) -> None:
        from zarr.core.sync import sync

        key = arr.metadata.encode_chunk_key(index + (0,) * len(self.spatial_shape))
        if not sync((arr.store_path / key).exists()):
            raise self._missing(name, index, f"{name}/{key}")

    def _read_chunk(self, name: str, index: tuple[int, ...], out: np.ndarray) -> None:
        root, codec, fill = self._fast[name]
        file = os.path.join(root, *map(str, index), *["0"] * len(self.spatial_shape))
        try:
            fd = os.open(file, os.O_RDONLY)
        except FileNotFoundError:
            if self.complete:
                raise self._missing(name, index, file) from None
            self._missing_as_fill(name, index)  # zarr skips chunks equal to the fill value by default
            out.fill(fill)
            return
        try:
            if codec is None:
                n = os.readv(fd, [memoryview(out).cast("B")])
                if n != out.nbytes:
                    raise DataError(f"{self.path}: {self._where(index)}: chunk {file} of variable {name!r} is "
                                    f"truncated ({n} of {out.nbytes} bytes)")
                return
            size = os.fstat(fd).st_size
            raw = os.read(fd, size)
            if len(raw) != size:
                raise DataError(f"{self.path}: {self._where(index)}: chunk {file} of variable {name!r}: short read")
        finally:
            os.close(fd)
        if codec == "blosc":  # blosc trusts its header: check sizes (bytes 4-8 nbytes, 12-16 cbytes) first
            nbytes, _, cbytes = struct.unpack_from("<III", raw, 4) if len(raw) >= 16 else (0, 0, 0)
            if cbytes != len(raw) or nbytes != out.nbytes:
                raise DataError(f"{self.path}: {self._where(index)}: chunk {file} of variable {name!r} is "
                                f"truncated ({len(raw)} bytes)")
        try:
            _decoder(codec)(raw, memoryview(out).cast("B"))
        except Exception as e:  # numcodecs raises RuntimeError/ValueError for corrupt or short input
            raise DataError(f"{self.path}: {self._where(index)}: chunk {file} of variable {name!r} cannot be "
                            f"decoded ({e})") from None

    def snapshot(self, i: int, t: int | None = None, variables: list[str] | None = None) -> dict[str, np.ndarray]:
        """All (or the given) variables of trajectory ``i`` at snapshot ``t`` (static ones without time)."""
        return {v: self.read(v, i, t) for v in (variables or self.variables)}

    def trajectory(self, i: int, variables: list[str] | None = None) -> dict[str, np.ndarray]:
        """Whole trajectory ``i``: states [T, *spatial], static fields [*spatial]."""
        out = {}
        for v in variables or self.variables:
            self._require(v)
            if self.is_static(v):
                out[v] = self.read(v, i)
            else:
                out[v] = np.stack([self.read(v, i, t) for t in range(len(self.time))])
        return out

    def to_xarray(self):
        """The store as a lazy xarray Dataset (no dask needed)."""
        import xarray as xr

        return xr.open_zarr(self.path, chunks=None, storage_options=self.storage_options, consolidated=True,
                            zarr_format=3)

    def __repr__(self) -> str:
        return f"FieldStore({self.path!r}, variables={self.variables}, n_trajectories={self.n_trajectories})"


_DECODERS: dict = {}


def _sum(a: np.ndarray) -> float:
    with np.errstate(over="ignore", invalid="ignore"):
        return a.sum()


def _decoder(codec: str):
    """``decode(src, dest)`` for a codec name, writing into ``dest``."""
    if codec not in _DECODERS:
        from numcodecs import Zstd, blosc

        blosc.use_threads = False  # one 128² chunk is too small for blosc's threads; loader workers parallelise
        zstd = Zstd()
        _DECODERS["blosc"] = blosc.decompress
        _DECODERS["zstd"] = lambda src, dest: zstd.decode(src, out=dest)
    return _DECODERS[codec]


def open_store(path: str | os.PathLike, **kwargs) -> FieldStore:
    """Open a canonical field store (local path or fsspec URL)."""
    return FieldStore(path, **kwargs)


class Verification:
    """What :func:`verify_store` found: counts, and one line per problem (array, index, what is wrong)."""

    def __init__(self, path: str, arrays: int, chunks: int, problems: list[str]):
        self.path, self.arrays, self.chunks, self.problems = path, arrays, chunks, problems

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line: all good, or how many problems and the first one."""
        if self.ok:
            return f"{self.path}: verified {self.arrays} arrays, {self.chunks} chunks: all present and finite"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return (f"{self.path}: verify found {len(self.problems)} problem(s) in {self.chunks} chunks of "
                f"{self.arrays} arrays: {self.problems[0]}{more}")


def verify_store(path: str | os.PathLike, storage_options: dict | None = None) -> Verification:
    """``sciformer data info --verify``: read every chunk of every array of a zarr store (any layout) and
    check that it is present, decodes to its full size, and holds only finite values (floating arrays).

    Field variables of local stores are read by :class:`FieldStore`'s fast reader, everything else through
    zarr. A chunk is reported missing even in stores that do not record ``all_chunks_written`` (zarr may have
    skipped it as all-fill; the problem line says so).
    """
    import itertools

    import zarr
    from zarr.core.sync import sync

    spath = str(path)
    if "://" not in spath and not os.path.exists(spath):
        recover_for_reading(spath)
    try:
        g = zarr.open_group(spath, mode="r", storage_options=storage_options)
    except FileNotFoundError:
        raise DataError(f"{spath}: no such store") from None
    except Exception as e:  # zarr raises several types for non-stores
        raise DataError(f"{spath}: not a zarr store ({type(e).__name__}: {e})") from None
    complete = bool(g.attrs.get(COMPLETE, False))
    fields = None
    if g.attrs.get("layout") == LAYOUT:
        try:
            fields = FieldStore(spath, storage_options=storage_options, check_finite=True)
        except DataError as e:
            return Verification(spath, 0, 0, [str(e)])
    async def keys(it):
        return {k async for k in it}

    problems, n_arrays, n_chunks = [], 0, 0
    absent_note = "" if complete else " (or all fill values, skipped by zarr: this store does not record that "                                       "every chunk was written)"
    for name, arr in sorted(g.members(max_depth=None), key=lambda m: m[0]):
        if not isinstance(arr, zarr.Array):
            continue
        n_arrays += 1
        present = sync(keys(arr.store.list_prefix(f"{arr.path}/")))
        dims = list(getattr(arr.metadata, "dimension_names", None) or [])
        grid = arr.cdata_shape
        try:
            floating = np.dtype(arr.dtype).kind in "fc"
        except TypeError:  # zarr's variable-length strings
            floating = False
        fast = fields is not None and name in fields._fast
        for coords in itertools.product(*map(range, grid)):
            n_chunks += 1
            label = _chunk_label(name, dims, grid, coords)
            key = f"{arr.path}/{arr.metadata.encode_chunk_key(coords)}"
            if key not in present:
                problems.append(f"{label}: chunk {key} is missing{absent_note}")
                continue
            try:
                if fast:
                    index = coords[: 1 if fields.is_static(name) else 2]
                    block = np.empty(fields.spatial_shape, np.float32)
                    fields.read_into(name, index[0], index[1] if len(index) > 1 else None, block)
                    continue  # read_into checks sizes and NaN/Inf itself
                sl = tuple(slice(c * k, min((c + 1) * k, n)) for c, k, n in zip(coords, arr.chunks, arr.shape))
                block = np.asarray(arr[sl])
            except DataError as e:
                problems.append(f"{label}: {str(e).removeprefix(f'{spath}: ')}")
                continue
            except Exception as e:  # zarr/numcodecs raise several types for short or corrupt chunks
                problems.append(f"{label}: chunk {key} cannot be read ({type(e).__name__}: {e})")
                continue
            if floating and not np.isfinite(block).all():
                where = np.argwhere(~np.isfinite(block))[0] + [c * k for c, k in zip(coords, arr.chunks)]
                problems.append(f"{label}: NaN/Inf at index {where.tolist()}")
    return Verification(spath, n_arrays, n_chunks, problems)


def _chunk_label(name: str, dims: list[str], grid: tuple[int, ...], coords: tuple[int, ...]) -> str:
    """``variable 'u' trajectory 2, time index 3`` for field chunks; ``array 'positions' chunk (1, 0)`` else."""
    if len(dims) == len(coords) and dims[:1] == ["trajectory"]:
        named = {"trajectory": "trajectory", "time": "time index"}
        parts = [f"{named.get(d, d)} {c}" for d, c, n in zip(dims, coords, grid) if n > 1 or d in named]
        return f"variable {name!r} " + ", ".join(parts)
    return f"array {name!r} chunk {tuple(coords)}"


def describe(path: str | os.PathLike) -> str:
    """``sciformer data info STORE``: variables, shapes, statistics, boundary conditions, NaN/Inf scan."""
    s = FieldStore(path, check_finite=False)
    a = s.attrs
    lines = [f"{s.path}: gridded fields ({'steady' if s.steady else 'time-dependent'}), pde={a.get('pde', '?')}",
             f"  trajectories: {s.n_trajectories}"]
    if not s.steady:
        lines.append(f"  time: {len(s.time)} snapshots, {s.time[0]:g} .. {s.time[-1]:g}")
    if getattr(s, "trajectory_time", None) is not None:
        tt = s.trajectory_time
        lines.append(f"  time grids: one per trajectory (above: trajectory 0), {tt[:, 0].min():g} .. "
                     f"{tt[:, -1].max():g} over all")
    for axis, c in s.coords.items():
        lo, hi = (float(c[0]), float(c[-1])) if len(c) else (0.0, 0.0)
        lines.append(f"  {axis}: {len(c)} points, {lo:g} .. {hi:g}, boundary {s.boundary_conditions.get(axis, '?')}")
    if "domain" in a or "generator" in a:
        lines.append(f"  domain: {json.dumps(a.get('domain'))}  generator: {json.dumps(a.get('generator'))}")
    # columns sized to their longest entry plus two spaces, so long names never run into the next column
    shapes = {v: (s.n_trajectories, *s.spatial_shape) if s.is_static(v) else
              (s.n_trajectories, len(s.time), *s.spatial_shape) for v in s.variables}
    wv, wr, wu, ws = (max(len(h), *(len(str(x)) for x in col)) + 2 for h, col in (
        ("variable", s.variables), ("role", s.roles.values()), ("units", s.units.values()),
        ("shape", [str(list(x)) for x in shapes.values()])))
    header = f"  {'variable':<{wv}}{'role':<{wr}}{'units':<{wu}}{'shape':<{ws}}{'mean':>12}{'std':>12}{'diff std':>12}"
    lines += ["", header, "  " + "-" * (len(header) - 2)]
    problems = []
    for v in s.variables:
        st, d = s.stats.get(v, {}), s.diff_stats.get(v, {})
        fmt = lambda x: f" {x:11.5g}" if x is not None else f"{'-':>12}"  # noqa: E731
        lines.append(f"  {v:<{wv}}{s.roles[v]:<{wr}}{s.units[v]:<{wu}}{str(list(shapes[v])):<{ws}}"
                     f"{fmt(st.get('mean'))}{fmt(st.get('std'))}{fmt(d.get('std'))}")
        times = [None] if s.is_static(v) else range(len(s.time))
        for i in range(s.n_trajectories):
            bad = []
            for t in times:
                try:
                    if not np.isfinite(s.read(v, i, t)).all():
                        bad.append(t)
                except DataError as e:  # a missing or short chunk
                    problems.append(f"  {str(e).removeprefix(f'{s.path}: ')}")
            if bad:
                where = "" if bad == [None] else f", time indices {bad[:5]}{'...' if len(bad) > 5 else ''}"
                problems.append(f"  NaN/Inf: variable {v!r}, trajectory {i}{where}")
    lines.append("")
    lines += problems or ["  NaN/Inf check: all values finite"]
    if problems:
        lines.append("  (`sciformer data info --verify` checks every chunk of every array and exits 1 on a problem)")
    return "\n".join(lines)
