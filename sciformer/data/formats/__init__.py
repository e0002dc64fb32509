"""Readers of external gridded-field formats (Poseidon NetCDF, The Well HDF5, PDEBench HDF5).

Each reader returns an :class:`~sciformer.data.formats.source.ArraySource` (the same read interface as the
zarr store, so it trains directly); ``open_source`` picks the reader by path and content.
"""

from __future__ import annotations

import os
from pathlib import Path

from sciformer.data.formats import pdebench, poseidon, well
from sciformer.data.formats.source import ArraySource, VarSpec, convert, open_h5
from sciformer.errors import DataError

__all__ = ["ArraySource", "VarSpec", "convert", "detect_format", "open_h5", "open_source"]


def _is_zarr(path: str) -> bool:
    return "://" in path or path.rstrip("/").endswith(".zarr") or (Path(path) / "zarr.json").exists()


def open_source(path: str | os.PathLike, fmt: str | None = None, **options):
    """A canonical store, or an external file read lazily (format from ``fmt`` or the file's content)."""
    path = str(path)
    if fmt is None and _is_zarr(path):
        from sciformer.data.store import FieldStore

        return FieldStore(path)
    if fmt is None:
        fmt = detect_format(path)
    opener = {"poseidon": poseidon.open_poseidon, "well": well.open_well, "pdebench": pdebench.open_pdebench}
    if fmt not in opener:
        raise DataError(f"{path}: unknown format {fmt!r}; use poseidon, well or pdebench")
    source = opener[fmt](path, **options)
    if not source.stats:
        source.compute_stats()
    return source


def detect_format(path: str) -> str:
    """poseidon (NetCDF variables velocity/data/solution/source), well (t0_fields...), pdebench (the rest)."""
    f = open_h5(path)
    try:
        keys = set(f.keys())
    finally:
        f.close()
    if keys & {"t0_fields", "t1_fields", "t2_fields"}:
        return "well"
    if path.endswith(".nc") or keys & {"velocity", "data", "source"} and "particles" not in keys:
        return "poseidon"
    if keys & {"tensor", "density", "Vx", "particles"} or any(k.isdigit() for k in keys):
        return "pdebench"
    raise DataError(f"{path}: unknown layout (top-level keys {sorted(keys)[:8]}); pass the format explicitly "
                    "(poseidon, well or pdebench)")
