"""Training on upstream data where it lives: a Well dataset directory, a PDEBench file and a Poseidon file named
directly as FieldDataModule stores give the same batches as the stores `sciformer data convert` makes from them;
splits follow the upstream (Well folders, Poseidon's index ranges); statistics come from stats.yaml or one
cached streaming pass; zarr and HDF5 read through fsspec URLs and file objects."""

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from well_files import write_well_dataset

from sciformer.data import commands
from sciformer.data.fields import FieldDataModule
from sciformer.data.formats import WellCollection, detect_format, open_h5, open_source, stats_cache
from sciformer.data.formats.well_collection import convert_well_directory
from sciformer.data.store import write_store
from sciformer.errors import DataError


@pytest.fixture(autouse=True)
def _user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def _batches(dm: FieldDataModule, stage: str = "train") -> list[dict]:
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[stage]()
    return list(loader)


def _assert_identical(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k  # bitwise


def _convert(src: Path, out: Path, fmt: str) -> Path:
    commands.main(["convert", str(src), str(out), "--from", fmt])
    return out


class _CountOpens:
    """Which HDF5 files h5py opens (by name or file object) while active."""

    def __init__(self, monkeypatch):
        self.names: list[str] = []
        real = h5py.File.__init__

        def init(obj, name, *args, **kwargs):
            if not isinstance(name, h5py.h5f.FileID):  # h5py wraps existing handles this way too
                self.names.append(str(getattr(name, "path", name)))
            real(obj, name, *args, **kwargs)

        monkeypatch.setattr(h5py.File, "__init__", init)


# ---- The Well ------------------------------------------------------------------------------------------
def test_well_directory_matches_welldataset(tmp_path, monkeypatch):
    """Reference: the_well's own WellDataset on the same directory (next-step items are its 1-in/1-out
    windows in the same global order, normalised with its ZScoreNormalization from stats.yaml)."""
    the_well = pytest.importorskip("the_well.data")
    from the_well.data.normalization import ZScoreNormalization

    root = tmp_path / "flow"
    written = write_well_dataset(root)
    assert detect_format(str(root)) == "well-dir"
    dm = FieldDataModule([str(root)], sampler="next-step", batch_size=4)
    raw = yaml.safe_load((root / "stats.yaml").read_text())
    assert dm.stats["density"] == {"mean": raw["mean"]["density"], "std": raw["std"]["density"]}
    assert dm.stats["velocity_y"] == {"mean": raw["mean"]["velocity"][1], "std": raw["std"]["velocity"][1]}
    spec = dm.spec
    assert spec["inputs"] == ["density", "pressure", "velocity_x", "velocity_y"]
    assert spec["boundary_conditions"] == {"x": "periodic", "y": "wall"}
    for stage, split in (("train", "train"), ("val", "valid"), ("test", "test")):
        ref = the_well.WellDataset(path=str(root), well_split_name=split, use_normalization=True,
                                   normalization_type=ZScoreNormalization)
        ours = dm.dataset(stage)
        assert len(ours) == len(ref) == sum(len(a["density"]) for a in written[split]) * 4
        assert ref.metadata.field_names[0] + ref.metadata.field_names[1] == spec["inputs"]
        for n in (0, 3, len(ref) - 1):
            item, r = ours[n], ref[n]
            np.testing.assert_allclose(item["x"].numpy(), np.moveaxis(r["input_fields"][0].numpy(), -1, 0), atol=1e-6)
            np.testing.assert_allclose(item["y"].numpy(), np.moveaxis(r["output_fields"][0].numpy(), -1, 0), atol=1e-6)
    # The Well's boundary encoding (WALL=0, OPEN=1, PERIODIC=2) per axis and side
    assert r["boundary_conditions"].tolist() == [[2.0, 2.0], [0.0, 0.0]]
    # values as stored: trajectory 0 of the second train file is collection trajectory 3
    c = dm.sources[0]
    assert c.locate(3) == (1, 0)
    np.testing.assert_array_equal(c.read("velocity_y", 3, 2), written["train"][1]["velocity"][0, 2, ..., 1])

    # a second open reads the cached index: no HDF5 file is opened until a sample is read
    opens = _CountOpens(monkeypatch)
    again = open_source(str(root))
    assert opens.names == [] and again.n_trajectories == 5
    again.read("density", 4, 0)
    assert [Path(p).name for p in opens.names] == ["fixture_flow_01.hdf5"]
    # a rewritten file (another size) is re-indexed
    dm.sources[0].close()
    again.close()
    rng = np.random.default_rng(9)
    from well_files import write_well_file

    write_well_file(root / "data" / "train" / "fixture_flow_01.hdf5", 4, (8, 8), 5, rng)
    os.utime(root / "data" / "train" / "fixture_flow_01.hdf5", ns=(1, 1))
    assert open_source(str(root)).n_trajectories == 3 + 4


def test_well_files_with_different_time_grids(tmp_path):
    """Files of one split saved at different intervals: per-trajectory times, lead times from each trajectory's
    own grid over the collection's span, and the same batches as the converted store."""
    from well_files import write_well_file

    root = tmp_path / "flow"
    write_well_dataset(root, files={"train": [2], "valid": [1], "test": [1]})
    write_well_file(root / "data" / "train" / "fixture_flow_01.hdf5", 2, (8, 8), 5, np.random.default_rng(1), dt=0.5)
    dm = FieldDataModule([str(root)], sampler="next-step", batch_size=4, seed=0)
    c = dm.sources[0]
    assert c.trajectory_time.shape == (4, 5) and c.trajectory_time[3, 1] == 0.5 and c.trajectory_time[1, 1] == 0.25
    train = dm.dataset("train")
    span = 2.0  # max(last) - min(first) = 4 × 0.5
    assert train[0]["t"].item() == pytest.approx(0.25 / span) and train[3 * 4]["t"].item() == pytest.approx(0.5 / span)
    store = convert_well_directory(root, tmp_path / "train.zarr", split="train")
    converted = FieldDataModule([str(store)], sampler="next-step", batch_size=4, seed=0, splits=(1.0, 0.0, 0.0),
                                stats=dm.stats)
    _assert_identical(_batches(dm), _batches(converted))


def test_well_directory_per_trajectory_time_rows_match_welldataset(tmp_path):
    """Files with per-trajectory time rows (``dimensions/time`` [B, T], sample_varying) mixed with a file on
    another shared grid: every trajectory keeps its own row (the per-file sources' rows, concatenated in file
    order), and each next-step item's times are WellDataset's ``input_time_grid``/``output_time_grid`` for the
    same item; its lead time is that gap over the train split's span, in the valid split too."""
    the_well = pytest.importorskip("the_well.data")
    from well_files import well_stats, write_well_file

    from sciformer.data.formats.well import open_well
    from sciformer.data.store import FieldStore

    root, rng = tmp_path / "flow", np.random.default_rng(4)
    rows = {"train": [np.array([[0.0, 0.1, 0.3, 0.6, 1.0], 0.3 + 0.2 * np.arange(5)]), 0.5 * np.arange(5)],
            "valid": [np.array([1.0 + 0.4 * np.arange(5), 0.25 * np.arange(5)])]}
    arrays = {}
    for split, grids in rows.items():
        arrays[split] = [write_well_file(root / "data" / split / f"fixture_flow_{k:02d}.hdf5", n, (8, 8), 5, rng,
                                         time=g) for k, (n, g) in enumerate(zip((2, 3), grids))]
    (root / "stats.yaml").write_text(yaml.safe_dump(well_stats(arrays["train"])))
    dm = FieldDataModule([str(root)], sampler="next-step", batch_size=4)
    c = dm.sources[0]
    files = sorted((root / "data" / "train").glob("*.hdf5"))
    per_file = [open_well(f) for f in files]
    assert per_file[0].trajectory_time is not None and per_file[1].trajectory_time is None
    want = np.concatenate([per_file[0].trajectory_time, np.tile(per_file[1].time, (3, 1))])
    np.testing.assert_array_equal(c.trajectory_time, want)
    np.testing.assert_array_equal(c.trajectory_time[:2], rows["train"][0])  # float64 as written
    np.testing.assert_array_equal(open_source(str(root)).trajectory_time, want)  # from the cached index
    span = 2.0  # train: max(last) − min(first) = 2.0 − 0.0
    assert dm.spec["time_span"] == span
    for stage, split in (("train", "train"), ("val", "valid")):
        ref = the_well.WellDataset(path=str(root), well_split_name=split, normalize_time_grid=False)
        ours = dm.dataset(stage)
        src = dm.source(0, stage)
        assert len(ours) == len(ref) == src.n_trajectories * 4
        for n in range(len(ref)):
            r = ref[n]
            i, (ti, tj) = ours.index.decode(n)
            times = src.trajectory_time[i]
            assert (times[ti], times[tj]) == (float(r["input_time_grid"][0]), float(r["output_time_grid"][0]))
            gap = float(r["output_time_grid"][0] - r["input_time_grid"][0])
            assert ours[n]["t"].item() == pytest.approx(gap / span, rel=1e-6)
    # the store converted from the split keeps the rows
    store = FieldStore(convert_well_directory(root, tmp_path / "train.zarr", split="train"))
    np.testing.assert_array_equal(store.trajectory_time, want)


def test_well_directory_errors(tmp_path):
    root = tmp_path / "flow"
    write_well_dataset(root, files={"train": [2], "test": [1]})
    with pytest.raises(DataError, match="a Well split folder; name the dataset directory"):
        open_source(str(root / "data" / "train"))
    dm = FieldDataModule([str(root)])
    with pytest.raises(DataError, match=r"no data/valid folder"):
        dm.dataset("val")
    other = tmp_path / "other"
    write_well_dataset(other, files={"train": [2]}, shape=(8, 4))
    shutil.copy(other / "data" / "train" / "fixture_flow_00.hdf5", root / "data" / "train" / "zz.hdf5")
    with pytest.raises(DataError, match=r"zz\.hdf5: does not match .*grid \(8, 4\) vs \(8, 8\)"):
        open_source(str(root))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither a zarr store"):
        open_source(str(tmp_path / "empty"))


def test_well_directory_identical_batches_to_converted(tmp_path):
    """Each split file converted by `sciformer data convert --from well` (a mixture of stores, in the
    collection's file order) and the whole split converted as one store give the batches of the directory."""
    root = tmp_path / "flow"
    write_well_dataset(root, files={"train": [3, 2], "valid": [2], "test": [1]})
    lazy = FieldDataModule([str(root)], batch_size=8, seed=5)
    files = sorted((root / "data" / "train").glob("*.hdf5"))
    stores = [str(_convert(f, tmp_path / f"{f.stem}.zarr", "well")) for f in files]
    per_file = FieldDataModule(stores, batch_size=8, seed=5, splits=(1.0, 0.0, 0.0), stats=lazy.stats)
    _assert_identical(_batches(lazy), _batches(per_file))
    workers = FieldDataModule([str(root)], batch_size=8, seed=5, num_workers=2)  # each worker opens its own handles
    _assert_identical(_batches(workers), _batches(per_file))
    whole = convert_well_directory(root, tmp_path / "train.zarr", split="train")
    one = FieldDataModule([str(whole)], batch_size=8, seed=5, splits=(1.0, 0.0, 0.0), stats=lazy.stats)
    _assert_identical(_batches(lazy), _batches(one))
    valid = convert_well_directory(root, tmp_path / "valid.zarr", split="valid")
    val = FieldDataModule([str(valid)], batch_size=8, seed=5, splits=(0.0, 1.0, 0.0), stats=lazy.stats)
    _assert_identical(_batches(lazy, "val"), _batches(val, "val"))
    # without stats.yaml: one streaming pass over the training split (cached), equal to the converted store's
    (root / "stats.yaml").unlink()
    computed = FieldDataModule([str(root)]).stats
    assert computed == {k: v for k, v in one.sources[0].stats.items()}
    assert (root / "data" / ".train.sciformer-stats.json").is_file()


# ---- PDEBench --------------------------------------------------------------------------------------------
def _pdebench_cfd(path: Path, n: int = 6, steps: int = 4, res: int = 8, seed: int = 0) -> dict:
    """PDEBench 2-D compressible CFD layout (pdebench data_gen; anchors/landscape-2026.md §4): density, pressure,
    Vx, Vy [N, T, X, Y] float32, x-/y-coordinate [X]/[Y], t-coordinate with T+1 entries."""
    rng = np.random.default_rng(seed)
    data = {k: rng.normal(m, 0.3, (n, steps, res, res)).astype(np.float32)
            for k, m in (("density", 1.0), ("pressure", 2.0), ("Vx", 0.0), ("Vy", 0.0))}
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            f.create_dataset(k, data=v)
        f.create_dataset("x-coordinate", data=(np.arange(res) + 0.5) / res)
        f.create_dataset("y-coordinate", data=(np.arange(res) + 0.5) / res)
        f.create_dataset("t-coordinate", data=0.05 * np.arange(steps + 1))
    return data


def test_pdebench_file_identical_batches_and_cached_stats(tmp_path, monkeypatch):
    src = tmp_path / "2D_CFD_Rand_M0.1_Eta0.01_Zeta0.01_periodic_128_Train.hdf5"
    data = _pdebench_cfd(src)
    lazy = FieldDataModule([str(src)], batch_size=5, seed=2)
    cache = tmp_path / f".{src.name}.sciformer-stats.json"
    assert cache.is_file()  # beside the data: the folder is writable
    converted = FieldDataModule([str(_convert(src, tmp_path / "cfd.zarr", "pdebench"))], batch_size=5, seed=2)
    assert lazy.stats == converted.stats  # the same streaming pass, bit for bit
    np.testing.assert_allclose(lazy.stats["rho"]["mean"], data["density"].astype(np.float64).mean(), rtol=1e-12)
    for stage in ("train", "val", "test"):
        _assert_identical(_batches(lazy, stage), _batches(converted, stage))
    assert [len(lazy.trajectories(s, lazy.sources[0])) for s in ("train", "val", "test")] == [4, 1, 1]
    # reopening uses the cache; a changed file is recomputed
    calls = []
    real = stats_cache.cached

    def spy(anchor, kind, files, compute, extra=None):
        return real(anchor, kind, files, lambda: calls.append(kind) or compute(), extra)

    monkeypatch.setattr(stats_cache, "cached", spy)
    FieldDataModule([str(src)])
    assert calls == []
    lazy.sources[0].close()  # h5py refuses to open a file for writing while it is open
    with h5py.File(src, "r+") as f:
        f["density"][0, 0, 0, 0] = 100.0
    os.utime(src, ns=(10**9, 10**9))
    changed = FieldDataModule([str(src)])
    assert calls == ["stats"] and changed.stats["rho"]["mean"] > lazy.stats["rho"]["mean"]
    monkeypatch.setattr(stats_cache, "_READERS", ["another reader version"])  # the readers' code changed
    FieldDataModule([str(src)])
    assert calls == ["stats", "stats"]


def test_h5py_reads_cache_datasets_and_select_components_in_numpy(tmp_path, monkeypatch):
    """ArraySource looks each dataset up once per process and reads ``[i, t]`` contiguously before taking a
    component: values equal h5py's own ``ds[i, t, :, :, c]`` bit for bit, via read and read_into; closing,
    pickling and a new process drop the handle."""
    import pickle

    src_path = tmp_path / "ns_incom_inhom_2d_8-0.h5"
    rng = np.random.default_rng(6)
    with h5py.File(src_path, "w") as f:
        f["velocity"] = rng.normal(size=(3, 4, 8, 6, 2)).astype(np.float32)
        f["particles"] = rng.normal(size=(3, 4, 8, 6, 1)).astype(np.float32)
        f["force"] = rng.normal(size=(3, 8, 6, 2))  # float64: cast to float32 as h5py + numpy would
        f["t"] = np.tile(0.1 * np.arange(4), (3, 1))
    src = open_source(str(src_path))
    cases = [(name, i, t) for name in ("u", "v", "particles") for i, t in ((0, 0), (2, 3), (1, 2))]
    with h5py.File(src_path, "r") as f:  # h5py's own strided component reads
        want = {(name, i, t): f[{"u": "velocity", "v": "velocity"}.get(name, name)][i, t, :, :, int(name == "v")]
                for name, i, t in cases}
        force_y = f["force"][2, :, :, 1].astype(np.float32)
    src.close()  # opening computed the statistics (a streaming pass through this source): start afresh
    lookups = []
    real = h5py.Group.__getitem__
    monkeypatch.setattr(h5py.Group, "__getitem__", lambda g, k: lookups.append(k) or real(g, k))
    for _ in range(2):
        for key in cases:
            got = src.read(*key)
            assert got.dtype == np.float32 and got.flags.c_contiguous and got.flags.owndata
            np.testing.assert_array_equal(got, want[key])
            into = np.full((8, 6), np.nan, np.float32)
            src.read_into(*key, into)
            np.testing.assert_array_equal(into, want[key])
        np.testing.assert_array_equal(src.read("force_y", 2), force_y)
    assert sorted(lookups) == ["force", "particles", "velocity"]  # one lookup per dataset
    monkeypatch.undo()
    clone = pickle.loads(pickle.dumps(src))
    assert clone._h5 is None and clone._datasets == {}
    np.testing.assert_array_equal(clone.read("v", 1, 1), src.read("v", 1, 1))
    clone.close()
    src.close()
    assert src._h5 is None and src._datasets == {}
    with h5py.File(src_path, "r+") as f:  # closed: the file can be opened for writing
        f["velocity"][1, 1, 0, 0, 1] = 7.0
    assert src.read("v", 1, 1)[0, 0] == 7.0
    src.close()


def test_stats_cache_falls_back_to_the_user_cache(tmp_path, monkeypatch):
    folder = tmp_path / "readonly"
    folder.mkdir()
    src = folder / "2D_CFD_periodic_Train.hdf5"
    _pdebench_cfd(src, n=3)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == folder else real_access(p, mode))
    s = open_source(str(src))
    assert not any(p.name.endswith("sciformer-stats.json") for p in folder.iterdir())
    cached = list((tmp_path / "xdg" / "sciformer").glob(f"*-{src.name}.stats.json"))
    assert len(cached) == 1 and stats_cache.locations(src, "stats")[1] == cached[0]
    assert open_source(str(src)).stats == s.stats


# ---- Poseidon ----------------------------------------------------------------------------------------------
def _poseidon_ns(path: Path, n: int, steps: int = 3, res: int = 4, seed: int = 0) -> np.ndarray:
    """Poseidon NS layout (anchors/poseidon.md §2.1): NetCDF4 ``velocity`` [N, T, 3 (u, v, tracer), X, Y]."""
    netCDF4 = pytest.importorskip("netCDF4")
    vel = np.random.default_rng(seed).normal(size=(n, steps, 3, res, res)).astype(np.float32)
    with netCDF4.Dataset(path, "w") as f:
        for d, m in zip(("member", "time", "channel", "x", "y"), vel.shape):
            f.createDimension(d, m)
        f.createVariable("velocity", "f4", ("member", "time", "channel", "x", "y"))[...] = vel
    return vel


def test_poseidon_file_splits_and_identical_batches(tmp_path):
    """Poseidon's ranges (scOT/problems/base.py 219-236, 329-364; anchors/poseidon.md §2.4): for NS-Sines,
    N_val = 120 and N_test = 240: train [0, N − 360), val [N − 360, N − 240), test [N − 240, N)."""
    src = tmp_path / "NS-Sines.nc"
    vel = _poseidon_ns(src, n=400)
    lazy = FieldDataModule([str(src)], batch_size=16, seed=1, max_snapshots=2)
    s = lazy.sources[0]
    assert [lazy.trajectories(st, s) for st in ("train", "val", "test")] == [range(0, 40), range(40, 160),
                                                                              range(160, 400)]
    first_test = lazy.dataset("test")[0]  # trajectory 160, pair (0, 0)
    u = lazy.stats["u"]
    np.testing.assert_allclose(first_test["y"][0], (vel[160, 0, 0] - u["mean"]) / u["std"], rtol=1e-5, atol=1e-6)
    assert FieldDataModule([str(src)], train_trajectories=8).trajectories("train", s) == range(0, 8)
    assert FieldDataModule([str(src)], native_splits=False).trajectories("test", s) == range(360, 400)
    # a store converted from a Poseidon file keeps the data set's name (attrs.generator), hence the ranges
    from types import SimpleNamespace

    from sciformer.data.fields import poseidon_splits

    ce_rm = SimpleNamespace(attrs={"generator": {"name": "poseidon", "dataset": "CE-RM"}}, n_trajectories=1260)
    assert poseidon_splits(ce_rm) == (range(0, 1030), range(1030, 1130), range(1130, 1260))
    assert poseidon_splits(SimpleNamespace(attrs={}, n_trajectories=1260)) is None
    # identical batches: lazy file vs `sciformer data convert --from poseidon` (10 trajectories: fractions)
    small = tmp_path / "NS-PwC.nc"
    _poseidon_ns(small, n=10, seed=4)
    lazy = FieldDataModule([str(small)], batch_size=16, seed=1)
    assert lazy.trajectories("train", lazy.sources[0]) == range(0, 8)
    store = _convert(small, tmp_path / "pwc.zarr", "poseidon")
    converted = FieldDataModule([str(store)], batch_size=16, seed=1, stats=lazy.stats)
    assert converted.sources[0].attrs["generator"]["dataset"] == "NS-PwC"
    for stage in ("train", "val", "test"):
        _assert_identical(_batches(lazy, stage), _batches(converted, stage))


def test_mixture_of_well_directory_pdebench_file_and_zarr_store(tmp_path):
    root = tmp_path / "flow"
    write_well_dataset(root, files={"train": [2], "valid": [1], "test": [1]})
    cfd = tmp_path / "2D_CFD_periodic_Train.hdf5"
    _pdebench_cfd(cfd, n=10, steps=5)
    rng = np.random.default_rng(3)
    write_store(tmp_path / "heat.zarr", {"u": rng.normal(size=(10, 5, 8, 8)).astype(np.float32)},
                {"u": {"role": "state"}}, np.arange(5.0), {"x": np.arange(8) / 8, "y": np.arange(8) / 8})
    dm = FieldDataModule([str(root), str(cfd), str(tmp_path / "heat.zarr")], batch_size=6)
    assert dm.spec["outputs"] == ["density", "pressure", "velocity_x", "velocity_y", "rho", "u", "v", "p"]
    train = dm.dataset("train")
    assert len(train) == (2 + 8 + 8) * 15 and len(dm.dataset("val")) == (1 + 1 + 1) * 15
    well_item, heat_item = train[0], train[(2 + 8) * 15]
    assert well_item["mask"].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert heat_item["mask"].tolist() == [0, 0, 0, 0, 0, 1, 0, 0]
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (6, 8, 8, 8)


# ---- fsspec ------------------------------------------------------------------------------------------------
def test_fsspec_zarr_urls_and_hdf5_file_objects(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    rng = np.random.default_rng(0)
    write_store(tmp_path / "a.zarr", {"u": rng.normal(size=(10, 4, 8, 8)).astype(np.float32)},
                {"u": {"role": "state"}}, np.arange(4.0), {"x": np.arange(8) / 8, "y": np.arange(8) / 8})
    local = _batches(FieldDataModule([str(tmp_path / "a.zarr")], batch_size=7, seed=4))
    mem = fsspec.filesystem("memory")
    mem.put(str(tmp_path / "a.zarr"), "/lazy-test/a.zarr", recursive=True)
    try:
        for url in (f"file://{tmp_path / 'a.zarr'}", "memory://lazy-test/a.zarr"):
            _assert_identical(local, _batches(FieldDataModule([url], batch_size=7, seed=4)))
        # HDF5 through fsspec: a URL (memory, file) and an open file object read what h5py reads locally
        src = tmp_path / "NS-Gauss.nc"
        vel = _poseidon_ns(src, n=10)
        mem.put(str(src), "/lazy-test/NS-Gauss.nc")
        with open_h5(fsspec.open("memory://lazy-test/NS-Gauss.nc", "rb").open()) as f:
            np.testing.assert_array_equal(f["velocity"][3, 1, 2], vel[3, 1, 2])
        with open_h5(f"file://{src}") as f:
            np.testing.assert_array_equal(f["velocity"][9], vel[9])
        lazy_local = _batches(FieldDataModule([str(src)], batch_size=7, seed=4, num_workers=0))
        remote = FieldDataModule(["memory://lazy-test/NS-Gauss.nc"], batch_size=7, seed=4)
        assert remote.sources[0].path == "memory://lazy-test/NS-Gauss.nc"
        _assert_identical(lazy_local, _batches(remote))
        with pytest.raises(DataError, match="memory://lazy-test/missing.h5: no such file"):
            open_h5("memory://lazy-test/missing.h5")
        mem.pipe("/lazy-test/bad.h5", b"not hdf5 at all")
        with pytest.raises(DataError, match="bad.h5: cannot open as HDF5"):
            open_h5("memory://lazy-test/bad.h5")
    finally:
        mem.rm("/lazy-test", recursive=True)


# ---- training --------------------------------------------------------------------------------------------
def test_fit_trains_on_a_well_directory(tmp_path, monkeypatch):
    from sciformer.cli import main

    root = tmp_path / "flow"
    write_well_dataset(root, files={"train": [3, 2], "valid": [1], "test": [1]})
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(f"""
seed_everything: 0
trainer:
  max_steps: 4
  accelerator: cpu
  enable_progress_bar: false
  enable_model_summary: false
  logger: false
  limit_val_batches: 1
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{save_last: true, dirpath: {tmp_path}/ckpt}}
model:
  class_path: sciformer.tasks.operator.OperatorTask
  init_args:
    model: factformer-2d-tiny
    model_options: {{dim: 16, depth: 1, heads: 2, dim_head: 8}}
    loss: mse
    lr: 3.0e-3
data:
  class_path: sciformer.data.fields.FieldDataModule
  init_args: {{stores: [{root}], batch_size: 8, sampler: all2all}}
""")
    assert main(["fit", "-c", str(cfg)]) == 0
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    assert ckpt["datamodule_hyper_parameters"]["stores"] == [str(root)]
    assert WellCollection(root, "train").n_trajectories == 5
