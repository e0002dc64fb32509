"""FieldDataModule: batch contents checked against hand-computed normalised values, masks, lead times,
mixtures of stores with different variables (one read lazily from a Poseidon NetCDF file), steady stores."""

import json

import numpy as np
import pytest
import torch

from sciformer.data.fields import FieldDataModule
from sciformer.data.store import write_store
from sciformer.errors import DataError

N, T, X, Y = 10, 5, 8, 8
TIME = np.array([0.0, 0.5, 1.0, 2.0, 4.0])  # non-uniform: lead times must use real times


def _store(path, names, static=(), seed=0, n=N):
    rng = np.random.default_rng(seed)
    data = {v: rng.normal(i + 1, i + 2, (n, T, X, Y)).astype(np.float32) for i, v in enumerate(names)}
    data |= {v: rng.normal(5, 3, (n, X, Y)).astype(np.float32) for v in static}
    variables = {v: {"role": "state"} for v in names} | {v: {"role": "coefficient"} for v in static}
    write_store(path, data, variables, TIME, {"x": np.arange(X) / X, "y": np.arange(Y) / Y},
                {"boundary_conditions": {"x": "periodic", "y": "periodic"}})
    return data


def test_all2all_batches_match_hand_computation(tmp_path):
    data = _store(tmp_path / "a.zarr", ["u", "v"], static=["c"])
    dm = FieldDataModule([str(tmp_path / "a.zarr")], batch_size=4)
    spec = dm.spec
    json.dumps(spec)
    assert spec["inputs"] == ["u", "v", "c"] and spec["outputs"] == ["u", "v"]
    assert (spec["in_channels"], spec["out_channels"], spec["spatial_shape"], spec["steady"]) == (3, 2, [X, Y], False)
    assert spec["time_span"] == 4.0 and spec["roles"]["c"] == "coefficient"
    assert spec["stats"]["u"]["mean"] == pytest.approx(data["u"].astype(np.float64).mean(), rel=1e-9)
    dm.setup("fit")
    train = dm.dataset("train")
    assert len(train) == 8 * 15  # 8 training trajectories × (K+1)(K+2)/2 with K+1 = 5
    item = train[7]  # trajectory 0, pair 7 of [(0,0..4),(1,1..4),(2,2..4),...] = (1, 3)
    st = spec["stats"]
    np.testing.assert_allclose(item["x"][0], (data["u"][0, 1] - st["u"]["mean"]) / st["u"]["std"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(item["x"][2], (data["c"][0] - st["c"]["mean"]) / st["c"]["std"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(item["y"][1], (data["v"][0, 3] - st["v"]["mean"]) / st["v"]["std"], rtol=1e-5, atol=1e-5)
    assert item["t"].item() == pytest.approx((2.0 - 0.5) / 4.0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (4, 3, X, Y) and batch["y"].shape == (4, 2, X, Y) and batch["t"].shape == (4,)
    assert batch["x"].dtype == torch.float32 and batch["mask"].tolist() == [[1.0, 1.0]] * 4
    assert len(dm.dataset("val")) == 15 and len(dm.dataset("test")) == 15


def test_next_step_stride_and_train_trajectories(tmp_path):
    _store(tmp_path / "a.zarr", ["u"])
    dm = FieldDataModule([str(tmp_path / "a.zarr")], sampler="next-step", time_stride=2, train_trajectories=3)
    ds = dm.dataset("train")
    assert len(ds) == 3 * 2  # snapshots 0, 2, 4 → pairs (0,2), (2,4)
    assert [ds[k]["t"].item() for k in range(2)] == pytest.approx([1.0 / 4.0, 3.0 / 4.0])
    dm = FieldDataModule([str(tmp_path / "a.zarr")], max_snapshots=3)
    assert len(dm.dataset("train")) == 8 * 6
    with pytest.raises(DataError, match="train_trajectories=20 but only 8"):
        FieldDataModule([str(tmp_path / "a.zarr")], train_trajectories=20).dataset("train")


def test_mixture_with_masks_and_lazy_netcdf(tmp_path):
    netCDF4 = pytest.importorskip("netCDF4")
    _store(tmp_path / "ce.zarr", ["rho", "u", "v", "p"], seed=1)
    vel = np.random.default_rng(2).normal(size=(10, T, 2, X, Y)).astype(np.float32)
    with netCDF4.Dataset(tmp_path / "NS-SL.nc", "w") as f:
        for d, n in zip(("n", "t", "c", "x", "y"), vel.shape):
            f.createDimension(d, n)
        f.createVariable("velocity", "f4", ("n", "t", "c", "x", "y"))[...] = vel
    dm = FieldDataModule([str(tmp_path / "ce.zarr"), str(tmp_path / "NS-SL.nc")], batch_size=8,
                         stats={"p": {"mean": 0.0, "std": 2.0}})
    spec = dm.spec
    assert spec["outputs"] == ["rho", "u", "v", "p"] and spec["stats"]["p"] == {"mean": 0.0, "std": 2.0}
    ds = dm.dataset("train")
    assert len(ds) == 2 * 8 * 15
    ns = ds[8 * 15 + 1]  # first trajectory of the NetCDF part, pair (0, 1)
    torch.testing.assert_close(ns["mask"], torch.tensor([0.0, 1.0, 1.0, 0.0]))
    assert torch.all(ns["x"][0] == 0) and torch.all(ns["y"][3] == 0)  # padded channels are zeros
    u = spec["stats"]["u"]
    # NS-SL is read transposed, as Poseidon's ShearLayer does (tests/data/test_upstream_poseidon.py)
    np.testing.assert_allclose(ns["y"][1], (vel[0, 1, 0].T - u["mean"]) / u["std"], rtol=1e-5, atol=1e-5)
    # pooled u statistics over both sources
    ce_u = dm.sources[0].stats["u"]
    assert u["mean"] != ce_u["mean"]
    torch.testing.assert_close(ds[0]["mask"], torch.ones(4))


def test_steady_store_batches(tmp_path):
    rng = np.random.default_rng(0)
    src, sol = rng.normal(size=(10, X, Y)).astype(np.float32), rng.normal(size=(10, X, Y)).astype(np.float32)
    write_store(tmp_path / "p.zarr", {"source": src, "solution": sol},
                {"source": {"role": "source"}, "solution": {"role": "solution"}}, None, {"x": np.arange(X), "y": np.arange(Y)})
    dm = FieldDataModule([str(tmp_path / "p.zarr")], batch_size=3)
    assert dm.spec["steady"] and dm.spec["time_span"] is None and dm.spec["inputs"] == ["source"]
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"x", "y", "mask"} and batch["x"].shape == (3, 1, X, Y)
    assert len(dm.dataset("train")) == 8


def test_workers_and_resumable_state(tmp_path):
    _store(tmp_path / "a.zarr", ["u"])
    dm = FieldDataModule([str(tmp_path / "a.zarr")], batch_size=5, num_workers=2, seed=3)
    loader = dm.train_dataloader()
    it = iter(loader)
    first = [next(it)["y"] for _ in range(3)]
    state = loader.state_dict()
    rest = [b["y"] for b in it]
    dm2 = FieldDataModule([str(tmp_path / "a.zarr")], batch_size=5, num_workers=0, seed=3)
    loader2 = dm2.train_dataloader()
    loader2.load_state_dict(state)
    resumed = [b["y"] for b in loader2]
    assert len(first) + len(rest) == -(-8 * 15 // 5) and len(resumed) == len(rest)
    for a, b in zip(rest, resumed):
        torch.testing.assert_close(a, b)


def test_errors(tmp_path):
    _store(tmp_path / "a.zarr", ["u"])
    with pytest.raises(DataError, match="unknown sampler"):
        FieldDataModule([str(tmp_path / "a.zarr")], sampler="random")
    with pytest.raises(DataError, match="no such store|not a zarr"):
        FieldDataModule([str(tmp_path / "missing.zarr")])
    _store(tmp_path / "b.zarr", ["u"], n=10)
    import zarr

    zarr.open_group(str(tmp_path / "b.zarr"), mode="r+")["u"][0, 2, 3, 3] = np.inf
    dm = FieldDataModule([str(tmp_path / "b.zarr")])
    with pytest.raises(DataError, match=r"b\.zarr: variable 'u' has NaN/Inf at trajectory 0, time index 2"):
        dm.dataset("train")[2]  # pair (0, 2)


def test_predict_static_makes_static_fields_targets(tmp_path):
    data = _store(tmp_path / "w.zarr", ["u"], static=["c"])
    dm = FieldDataModule([str(tmp_path / "w.zarr")], predict_static=True)
    assert dm.spec["inputs"] == ["u", "c"] and dm.spec["outputs"] == ["u", "c"]
    item = dm.dataset("train")[3]  # pair (0, 3)
    st = dm.spec["stats"]["c"]
    np.testing.assert_allclose(item["y"][1], (data["c"][0] - st["mean"]) / st["std"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(item["x"][1], item["y"][1])
