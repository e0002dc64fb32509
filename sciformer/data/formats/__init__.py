"""Readers of external gridded-field formats (Poseidon NetCDF, The Well HDF5, PDEBench HDF5).

Each reader returns an :class:`~sciformer.data.formats.source.ArraySource` (the same read interface as the
zarr store, so it trains directly); a Well dataset directory (``data/{train,valid,test}/*.hdf5``) is one
:class:`~sciformer.data.formats.well_collection.WellCollection` per split. ``open_source`` picks the reader by
path and content; a source without statistics gets them from one streaming pass, cached
(:mod:`~sciformer.data.formats.stats_cache`).
"""

from __future__ import annotations

import os
from pathlib import Path

from sciformer.data.formats import pdebench, poseidon, stats_cache, well
from sciformer.data.formats.source import ArraySource, VarSpec, convert, open_h5
from sciformer.data.formats.well_collection import WellCollection, is_well_directory, open_well_directory
from sciformer.errors import DataError

H5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nc")
__all__ = ["ArraySource", "VarSpec", "WellCollection", "convert", "detect_format", "open_h5", "open_source"]


def _is_zarr(path: str) -> bool:
    if "://" in path:  # a URL: zarr unless it names an HDF5/NetCDF file (read through fsspec file objects)
        return not path.rstrip("/").endswith(H5_SUFFIXES)
    return path.rstrip("/").endswith(".zarr") or (Path(path) / "zarr.json").exists()


def open_source(path: str | os.PathLike, fmt: str | None = None, **options):
    """A canonical store, or external data read lazily (format from ``fmt`` or the path's content).

    A Well dataset directory opens as its ``split`` (option; default ``train``). Sources without statistics
    get them from one streaming pass, cached beside the data or in ``$XDG_CACHE_HOME/sciformer``.
    """
    path = str(path)
    if fmt is None and _is_zarr(path):
        from sciformer.data.store import FieldStore

        return FieldStore(path)
    if fmt is None:
        fmt = detect_format(path)
    if fmt == "well-dir" or (fmt == "well" and os.path.isdir(path)):
        return open_well_directory(path, **options)
    opener = {"poseidon": poseidon.open_poseidon, "well": well.open_well, "pdebench": pdebench.open_pdebench}
    if fmt not in opener:
        raise DataError(f"{path}: unknown format {fmt!r}; use poseidon, well, well-dir or pdebench")
    source = opener[fmt](path, **options)
    if not source.stats or set(source.stats) != set(source.variables):
        stats_cache.source_stats(source)
    return source


def detect_format(path: str) -> str:
    """well-dir (a Well dataset directory), poseidon (NetCDF variables velocity/data/solution/source), well
    (t0_fields...), pdebench (the rest)."""
    if "://" not in path and os.path.isdir(path):
        if is_well_directory(path):
            return "well-dir"
        if any(Path(path).glob("*.hdf5")) and Path(path).parent.name == "data":
            raise DataError(f"{path}: a Well split folder; name the dataset directory {Path(path).parent.parent} "
                            "instead (its train/valid/test folders become the splits)")
        raise DataError(f"{path}: a folder that is neither a zarr store (no zarr.json) nor a Well dataset "
                        "directory (data/{train,valid,test}/*.hdf5)")
    f = open_h5(path)
    try:
        keys = set(f.keys())
    finally:
        f.close()
    if keys & {"t0_fields", "t1_fields", "t2_fields"}:
        return "well"
    if path.endswith(".nc") or keys & {"velocity", "data", "source"} and "particles" not in keys \
            or any(k.startswith("Sample_") for k in keys):  # Poseidon's Helmholtz.h5
        return "poseidon"
    if keys & {"tensor", "density", "Vx", "particles"} or any(k.isdigit() for k in keys):
        return "pdebench"
    raise DataError(f"{path}: unknown layout (top-level keys {sorted(keys)[:8]}); pass the format explicitly "
                    "(poseidon, well or pdebench)")
