"""Write a Well dataset directory from The Well's published layout (the_well ``docs/data_format.md`` and
``WellDataset``; shared/anchors/landscape-2026.md §4), with h5py directly, not with our writer.

``<root>/stats.yaml`` and ``<root>/data/{train,valid,test}/<name>_<k>.hdf5``; each file:

- root attrs ``dataset_name``, ``grid_type="cartesian"``, ``n_spatial_dims``, ``n_trajectories``,
  ``simulation_parameters`` (each also a root attr and a ``/scalars`` dataset);
- ``/dimensions``: attr ``spatial_dims``; ``time`` [T] (or [B, T]) and one coordinate [n] per axis, attrs ``sample_varying``
  (and ``time_varying`` for coordinates);
- ``/boundary_conditions/<axis>_periodic|wall``: attrs ``bc_type``, ``associated_dims``, ``associated_fields``,
  ``sample_varying``, ``time_varying``; datasets ``mask`` (bool, True at both ends) and ``values``;
- ``/t0_fields/density``, ``/t0_fields/pressure`` [B, T, X, Y] and ``/t1_fields/velocity`` [B, T, X, Y, 2]
  (float32; attrs ``dim_varying``, ``sample_varying``, ``time_varying``); ``/t2_fields`` empty;
- ``stats.yaml``: ``mean, std, rms, mean_delta, std_delta, rms_delta`` per field (per component for vectors),
  over the training split in float64.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import yaml

FIELDS = {"density": 0, "pressure": 0, "velocity": 1}


def write_well_file(path: Path, n: int, shape: tuple[int, int], steps: int, rng: np.random.Generator,
                    name: str = "fixture_flow", reynolds: float = 0.7, dt: float = 0.25,
                    time: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One Well HDF5 file with ``n`` trajectories; returns its field arrays (as stored).

    ``time``: the snapshot times, [T] (default ``dt · arange(T)``) or one row per trajectory [n, T], written as
    The Well writes sample-varying times (``dimensions/time`` [B, T] with ``sample_varying`` true)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.linspace(0.0, 1.0, shape[0], endpoint=False)
    y = np.linspace(-1.0, 1.0, shape[1])
    t = dt * np.arange(steps) if time is None else np.asarray(time, dtype=np.float64)
    if t.shape not in ((steps,), (n, steps)):
        raise ValueError(f"time has shape {t.shape}; expected {(steps,)} or {(n, steps)}")
    data = {"density": rng.normal(1.0, 0.2, (n, steps, *shape)).astype(np.float32),
            "pressure": rng.normal(3.0, 0.5, (n, steps, *shape)).astype(np.float32),
            "velocity": rng.normal(0.0, 1.0, (n, steps, *shape, 2)).astype(np.float32) * np.array([1.0, 0.5], np.float32)}
    with h5py.File(path, "w") as f:
        f.attrs.update({"dataset_name": name, "grid_type": "cartesian", "n_spatial_dims": 2, "n_trajectories": n,
                        "simulation_parameters": ["Reynolds"], "Reynolds": reynolds})
        d = f.create_group("dimensions")
        d.attrs["spatial_dims"] = ["x", "y"]
        d.create_dataset("time", data=t).attrs["sample_varying"] = t.ndim == 2
        for axis, c in (("x", x), ("y", y)):
            ds = d.create_dataset(axis, data=c)
            ds.attrs.update({"sample_varying": False, "time_varying": False})
        b = f.create_group("boundary_conditions")
        for axis, kind, m in (("x", "PERIODIC", shape[0]), ("y", "WALL", shape[1])):
            g = b.create_group(f"{axis}_{kind.lower()}")
            g.attrs.update({"bc_type": kind, "associated_dims": [axis], "associated_fields": [],
                            "sample_varying": False, "time_varying": False})
            mask = np.zeros(m, dtype=bool)
            mask[[0, -1]] = True
            g.create_dataset("mask", data=mask)
            g.create_dataset("values", data=np.zeros(0, np.float32))
        s = f.create_group("scalars")
        s.attrs["field_names"] = ["Reynolds"]
        s.create_dataset("Reynolds", data=np.array(reynolds)).attrs.update({"sample_varying": False,
                                                                            "time_varying": False})
        for order in range(3):
            g = f.create_group(f"t{order}_fields")
            names = [k for k, o in FIELDS.items() if o == order]
            g.attrs["field_names"] = names
            for k in names:
                ds = g.create_dataset(k, data=data[k])
                ds.attrs.update({"dim_varying": [True, True], "sample_varying": True, "time_varying": True})
    return data


def well_stats(arrays: list[dict[str, np.ndarray]]) -> dict:
    """stats.yaml content over the given files' fields (float64; per component for vectors)."""
    out: dict = {k: {} for k in ("mean", "std", "rms", "mean_delta", "std_delta", "rms_delta")}
    for field, order in FIELDS.items():
        a = np.concatenate([d[field] for d in arrays]).astype(np.float64)
        delta = np.diff(a, axis=1)
        axes = tuple(range(a.ndim - order))
        for key, v in (("mean", a.mean(axes)), ("std", a.std(axes)), ("rms", np.sqrt((a ** 2).mean(axes))),
                       ("mean_delta", delta.mean(axes)), ("std_delta", delta.std(axes)),
                       ("rms_delta", np.sqrt((delta ** 2).mean(axes)))):
            out[key][field] = v.tolist() if order else float(v)
    return out


def write_well_dataset(root: Path, files: dict[str, list[int]] | None = None, shape: tuple[int, int] = (8, 8),
                       steps: int = 5, seed: int = 0, stats: bool = True, name: str = "fixture_flow"):
    """A Well dataset directory; ``files`` = trajectories per file for each split. Returns
    ``{split: [arrays of each file in sorted order]}``."""
    files = files or {"train": [3, 2], "valid": [2], "test": [2]}
    rng = np.random.default_rng(seed)
    out = {}
    for split, counts in files.items():
        out[split] = [write_well_file(Path(root) / "data" / split / f"{name}_{k:02d}.hdf5", n, shape, steps, rng, name)
                      for k, n in enumerate(counts)]
    if stats:
        (Path(root) / "stats.yaml").write_text(yaml.safe_dump(well_stats(out["train"])))
    return out
