"""NetCDF4 fixtures written with the netCDF4 library, variables with named dims as Poseidon's files have."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_nc(path: Path, arrays: dict[str, tuple[tuple[str, ...], np.ndarray]]) -> Path:
    """A real NetCDF4 file: ``{name: (dims, float32 array)}``; dims of the same name share one dimension."""
    import netCDF4

    with netCDF4.Dataset(path, "w") as ds:
        for name, (dims, arr) in arrays.items():
            for d, n in zip(dims, arr.shape):
                if d not in ds.dimensions:
                    ds.createDimension(d, n)
            ds.createVariable(name, "f4", dims)[...] = arr
    return path
