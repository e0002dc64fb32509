"""All2all pairs/s from a 4-variable 128² field store, zarr (compressed, uncompressed) vs a NetCDF file read per
sample with h5py as Poseidon reads it.

Protocol (DECISIONS "Data-loading benchmark protocol"): random pair order, batch 16, float32, z-score
normalisation included, one persistent handle per DataLoader worker, num_workers 0 and 2. Every path serves
the same batches ({x, y, t, mask}) through torch's DataLoader:

- ``zarr (blosc-lz4)`` (the default) / ``zarr (zstd)`` / ``zarr (raw)``: FieldDataModule's dataset over a
  canonical store (chunk-file fast path);
- ``zarr via zarr-python``: the same store read through ``zarr.Array.__getitem__`` (fast path off);
- ``netcdf h5py``: ``data`` [N, T, 4, 128, 128] (Poseidon's CE layout, written by netCDF4, contiguous); each
  pair reads ``data[i, t1, 0:4]`` and ``data[i, t2, 0:4]`` as Poseidon's dataset classes do.
- ``well directory (lazy h5py)``: the same fields as a Well dataset directory (``data/train/*.hdf5``, 4 files,
  The Well's layout: ``t0_fields/{rho,p}`` [B, T, X, Y], ``t1_fields/velocity`` [B, T, X, Y, 2], contiguous
  float32 as h5py writes them; ``stats.yaml``) named directly as FieldDataModule's store, against
  ``zarr converted from it``: the store ``convert_well_directory`` writes from that directory (blosc-lz4).

Files are freshly written, so reads come from the page cache (this measures decode + copy + normalise, not
the disk). Prints a table and writes JSON.

    python benchmarks/data_loading.py --json runs/bench/data_loading.json
    python benchmarks/data_loading.py --trajectories 8 --batches 20     # quicker
    python benchmarks/data_loading.py --only well                        # the Well directory vs its zarr store
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sciformer.data.fields import FieldDataModule
from sciformer.data.samplers import PairIndex, all2all_pairs, collate, snapshot_indices
from sciformer.data.store import write_store

VARS = ["rho", "u", "v", "p"]
WELL_FILES = 4


def write_well_directory(root: Path, data: np.ndarray, coords: dict) -> Path:
    """``data`` [n, t, 4 (rho, u, v, p), X, Y] as a Well dataset directory with WELL_FILES train files."""
    import h5py
    import yaml

    n, t = data.shape[:2]
    chunks = np.array_split(np.arange(n), WELL_FILES)
    for k, idx in enumerate(chunks):
        path = root / "data" / "train" / f"bench_{k:02d}.hdf5"
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            f.attrs.update({"dataset_name": "bench", "grid_type": "cartesian", "n_spatial_dims": 2,
                            "n_trajectories": len(idx), "simulation_parameters": []})
            d = f.create_group("dimensions")
            d.attrs["spatial_dims"] = ["x", "y"]
            d.create_dataset("time", data=np.arange(t, dtype=float)).attrs["sample_varying"] = False
            for a, c in coords.items():
                d.create_dataset(a, data=c).attrs.update({"sample_varying": False, "time_varying": False})
            f.create_group("boundary_conditions")
            f.create_group("scalars").attrs["field_names"] = []
            fields = {0: {"rho": data[idx, :, 0], "p": data[idx, :, 3]},
                      1: {"velocity": np.stack([data[idx, :, 1], data[idx, :, 2]], axis=-1)}, 2: {}}
            for order, group in fields.items():
                g = f.create_group(f"t{order}_fields")
                g.attrs["field_names"] = list(group)
                for name, arr in group.items():
                    g.create_dataset(name, data=arr).attrs.update(
                        {"dim_varying": [True, True], "sample_varying": True, "time_varying": True})
    a = data.astype(np.float64)
    stats = {"mean": {"rho": float(a[:, :, 0].mean()), "p": float(a[:, :, 3].mean()),
                      "velocity": [float(a[:, :, 1].mean()), float(a[:, :, 2].mean())]},
             "std": {"rho": float(a[:, :, 0].std()), "p": float(a[:, :, 3].std()),
                     "velocity": [float(a[:, :, 1].std()), float(a[:, :, 2].std())]}}
    (root / "stats.yaml").write_text(yaml.safe_dump(stats))
    return root


def make_fields(n: int, t: int, res: int, seed: int = 0) -> np.ndarray:
    """Smooth random fields [n, t, 4, res, res] (a few Fourier modes + 1 % noise), like simulation output."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 2 * np.pi, res, endpoint=False)
    X, Y = np.meshgrid(x, x, indexing="ij")
    out = np.empty((n, t, 4, res, res), np.float32)
    for i in range(n):
        for c in range(4):
            k = rng.integers(1, 5, size=(4, 2))
            ph, amp = rng.uniform(0, 2 * np.pi, 4), rng.normal(size=4)
            for s in range(t):
                f = sum(a * np.sin(kx * X + ky * Y + p + 0.1 * s) for a, (kx, ky), p in zip(amp, k, ph))
                out[i, s, c] = f + 0.01 * rng.normal(size=f.shape) + (1.0 if c == 0 else 0.0)
    return out


class H5Pairs(Dataset):
    """Poseidon-style reader: h5py handle per worker, ``data[i, t, 0:4]`` per snapshot, z-score."""

    def __init__(self, path: str, n: int, t: int, mean: np.ndarray, std: np.ndarray):
        self.path, self.handle, self.pid = path, None, None
        self.index = PairIndex(range(n), all2all_pairs(snapshot_indices(t)))
        self.mean, self.std, self.span = mean[:, None, None], std[:, None, None], float(t - 1)

    def __len__(self):
        return len(self.index)

    def __getitem__(self, k):
        import h5py

        if self.handle is None or self.pid != os.getpid():
            self.handle, self.pid = h5py.File(self.path, "r"), os.getpid()
        i, (a, b) = self.index.decode(k)
        d = self.handle["data"]
        x = (d[i, a, 0:4] - self.mean) / self.std
        y = (d[i, b, 0:4] - self.mean) / self.std
        return {"x": torch.from_numpy(x.astype(np.float32)), "y": torch.from_numpy(y.astype(np.float32)),
                "t": torch.tensor((b - a) / self.span, dtype=torch.float32), "mask": torch.ones(4)}


def measure(dataset, workers: int, batches: int, batch_size: int, seed: int = 0) -> float:
    """Pairs/s over ``batches`` batches after 3 warm-up batches (worker start-up excluded)."""
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=g, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
    it = iter(loader)
    for _ in range(3):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        b = next(it)
        assert b["x"].dtype == torch.float32
    dt = time.perf_counter() - t0
    del it, loader
    return batches * batch_size / dt


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trajectories", type=int, default=16)
    p.add_argument("--snapshots", type=int, default=21)
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=40, help="timed batches per run")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; the table shows the median")
    p.add_argument("--dir", type=Path, default=None, help="where to write the stores (default: a temp dir)")
    p.add_argument("--json", type=Path, default=Path("runs/bench/data_loading.json"))
    p.add_argument("--only", choices=["well"], default=None, help="time only the Well directory and its zarr store")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="sciformer-bench-", dir=args.dir))
    try:
        n, t, r = args.trajectories, args.snapshots, args.resolution
        print(f"writing {n} trajectories × {t} snapshots × 4 variables × {r}² ...", flush=True)
        data = make_fields(n, t, r)
        coords = {"x": np.arange(r) / r, "y": np.arange(r) / r}
        variables = {v: {"role": "state"} for v in VARS}
        arrays = {v: data[:, :, c] for c, v in enumerate(VARS)}
        sizes = {}
        for name, comp in (("lz4", "lz4"), ("zstd", "zstd"), ("raw", None)):
            path = write_store(root / f"{name}.zarr", arrays, variables, np.arange(t, dtype=float), coords,
                               compressor=comp)
            sizes[name] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        import netCDF4

        nc = root / "CE-bench.nc"
        with netCDF4.Dataset(nc, "w") as f:
            for d, m in zip(("member", "time", "channel", "x", "y"), data.shape):
                f.createDimension(d, m)
            f.createVariable("data", "f4", ("member", "time", "channel", "x", "y"), contiguous=True)[...] = data
        sizes["netcdf"] = nc.stat().st_size
        from sciformer.data.formats.well_collection import convert_well_directory

        well = write_well_directory(root / "well", data, coords)
        sizes["well"] = sum(f.stat().st_size for f in (well / "data").rglob("*.hdf5"))
        convert_well_directory(well, root / "well.zarr", split="train")
        sizes["well.zarr"] = sum(f.stat().st_size for f in (root / "well.zarr").rglob("*") if f.is_file())
        well_dm = FieldDataModule([str(well)], batch_size=args.batch_size)

        dm = FieldDataModule([str(root / "zstd.zarr")], splits=(1.0, 0.0, 0.0), batch_size=args.batch_size)
        mean = np.array([dm.stats[v]["mean"] for v in VARS], np.float32)
        std = np.array([dm.stats[v]["std"] for v in VARS], np.float32)

        def zarr_ds(store: str, fast: bool = True):
            m = FieldDataModule([str(root / store)], splits=(1.0, 0.0, 0.0), stats=dm.stats)
            ds = m.dataset("train")
            if not fast:
                ds.source._fast = {}
            return ds

        paths = {
            "zarr (blosc-lz4)": lambda: zarr_ds("lz4.zarr"),
            "zarr (zstd)": lambda: zarr_ds("zstd.zarr"),
            "zarr (raw)": lambda: zarr_ds("raw.zarr"),
            "zarr (zstd) via zarr-python": lambda: zarr_ds("zstd.zarr", fast=False),
            "netcdf h5py per sample": lambda: H5Pairs(str(nc), n, t, mean, std),
            "well directory (lazy h5py)": lambda: FieldDataModule([str(well)]).dataset("train"),
            "zarr converted from it": lambda: FieldDataModule([str(root / "well.zarr")], splits=(1.0, 0.0, 0.0),
                                                              stats=well_dm.stats).dataset("train"),
        }
        # same batch content across paths (normalised pair 0 of trajectory 0, lead time 0)
        ref = paths["netcdf h5py per sample"]()[5]
        well_names = ("well directory (lazy h5py)", "zarr converted from it")
        for name, make in paths.items():
            if name in well_names:
                continue
            item = make()[5]
            assert torch.allclose(item["y"], ref["y"], atol=1e-4), name
        # the Well directory and its converted store serve identical batches (channels rho, p, velocity_x/y)
        for k in (0, 5, len(paths[well_names[0]]()) - 1):
            a, b = paths[well_names[0]]()[k], paths[well_names[1]]()[k]
            assert all(torch.equal(a[key], b[key]) for key in a), k
        if args.only == "well":
            paths = {k: v for k, v in paths.items() if k in well_names}
        load = os.getloadavg()
        print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}  (cpus: {os.cpu_count()})")
        runs: dict[tuple[str, int], list[float]] = {(n_, w): [] for n_ in paths for w in args.workers}
        for rep in range(args.repeats):  # interleaved, so load changes hit every configuration alike
            for name, make in paths.items():
                for w in args.workers:
                    rate = measure(make(), w, args.batches, args.batch_size, seed=rep)
                    runs[(name, w)].append(rate)
                    print(f"  [{rep + 1}/{args.repeats}] {name:<30} workers={w}: {rate:8.1f} pairs/s", flush=True)
        rows = [{"path": k[0], "num_workers": k[1], "pairs_per_s": float(np.median(v)), "runs": v}
                for k, v in runs.items()]
        print(f"\nmedian of {args.repeats} interleaved runs (min–max in brackets)")
        print("| path | bytes on disk | " + " | ".join(f"pairs/s, {w} workers" for w in args.workers) + " |")
        print("|---|---|" + "---|" * len(args.workers))
        disk = {"zarr (blosc-lz4)": sizes["lz4"], "zarr (zstd)": sizes["zstd"], "zarr (raw)": sizes["raw"], "zarr (zstd) via zarr-python": sizes["zstd"],
                "netcdf h5py per sample": sizes["netcdf"], "well directory (lazy h5py)": sizes["well"],
                "zarr converted from it": sizes["well.zarr"]}
        for name in paths:
            cells = [f"{np.median(runs[(name, w)]):.0f} ({min(runs[(name, w)]):.0f}–{max(runs[(name, w)]):.0f})"
                     for w in args.workers]
            print(f"| {name} | {disk[name] / 2**20:.1f} MiB | " + " | ".join(cells) + " |")
        out = {"rows": rows, "bytes": sizes, "trajectories": n, "snapshots": t, "resolution": r,
               "batch_size": args.batch_size, "batches": args.batches, "repeats": args.repeats, "load_average_before": load,
               "load_average_after": os.getloadavg(), "cpus": os.cpu_count(), "platform": platform.platform(),
               "torch": torch.__version__}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
