"""Canonical field store: round trip, statistics, xarray view, resume/atomicity, clear errors."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from sciformer.data.store import FieldStore, FieldStoreWriter, open_store, write_store
from sciformer.errors import DataError

VARS = {"u": {"role": "state", "units": "1"}, "c": {"role": "coefficient", "units": "m/s"}}
N, T, X, Y = 4, 5, 8, 6


def _data(seed=0):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(N, T, X, Y)).astype(np.float32)
    u[1, 2] = 0.0  # an all-zero snapshot: zarr skips writing it (fill value) and it must still read back
    c = (3.0 + rng.random((N, X, Y))).astype(np.float32)
    return {"u": u, "c": c}


def _writer(path, **kw):
    return FieldStoreWriter(path, VARS, N, np.linspace(0.0, 2.0, T), {"x": np.arange(X) / X, "y": np.arange(Y) / Y},
                            {"pde": "test", "boundary_conditions": {"x": "periodic", "y": "dirichlet"}}, **kw)


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("compressor", ["lz4", "zstd", None])
def test_round_trip_and_statistics(tmp_path, compressor):
    data = _data()
    w = _writer(tmp_path / "s.zarr", compressor=compressor)
    for i in range(N):
        w.write_trajectory(i, {k: v[i] for k, v in data.items()})
    path = w.finalize()
    assert path == tmp_path / "s.zarr" and not (tmp_path / ".s.zarr.partial").exists()
    s = open_store(path)
    assert s.variables == ["u", "c"] and s.roles == {"u": "state", "c": "coefficient"}
    assert s.units["c"] == "m/s" and s.boundary_conditions == {"x": "periodic", "y": "dirichlet"}
    assert s.spatial_shape == (X, Y) and s.n_trajectories == N and not s.steady
    for i in range(N):
        tr = s.trajectory(i)
        np.testing.assert_array_equal(tr["u"], data["u"][i])
        np.testing.assert_array_equal(tr["c"], data["c"][i])
    np.testing.assert_array_equal(s.snapshot(2, 3)["u"], data["u"][2, 3])
    u64 = data["u"].astype(np.float64)
    assert s.stats["u"]["mean"] == pytest.approx(u64.mean(), rel=1e-12, abs=1e-14)
    assert s.stats["u"]["std"] == pytest.approx(u64.std(), rel=1e-12)
    assert s.stats["c"]["std"] == pytest.approx(data["c"].astype(np.float64).std(), rel=1e-12)
    d = np.diff(u64, axis=1)
    assert s.diff_stats["u"]["mean"] == pytest.approx(d.mean(), abs=1e-14)
    assert s.diff_stats["u"]["std"] == pytest.approx(d.std(), rel=1e-12)
    assert "c" not in s.diff_stats
    # fast path (chunk files) and zarr path agree
    assert s._fast and set(s._fast) == {"u", "c"}
    g = zarr.open_group(str(path), mode="r")
    np.testing.assert_array_equal(g["u"][3, 4], s.read("u", 3, 4))


def test_xarray_view_and_layout(tmp_path):
    data = _data()
    path = write_store(tmp_path / "s.zarr", data, VARS, np.linspace(0, 2, T), {"x": np.arange(X) / X, "y": np.arange(Y) / Y},
                       {"pde": "test"})
    ds = open_store(path).to_xarray()
    assert ds.attrs["layout"] == "fields" and ds.attrs["pde"] == "test"
    assert ds["u"].dims == ("trajectory", "time", "x", "y") and ds["c"].dims == ("trajectory", "x", "y")
    np.testing.assert_array_equal(ds["u"].values, data["u"])  # the zero chunk is 0, not masked to NaN
    np.testing.assert_allclose(ds["time"].values, np.linspace(0, 2, T))
    assert ds["u"].attrs["role"] == "state" and "diff_std" in ds["u"].attrs
    assert ds.attrs["boundary_conditions"] == {"x": "unspecified", "y": "unspecified"}
    meta = json.loads((path / "zarr.json").read_text())
    assert "consolidated_metadata" in meta and meta["consolidated_metadata"]
    u = json.loads((path / "u" / "zarr.json").read_text())
    assert u["chunk_grid"]["configuration"]["chunk_shape"] == [1, 1, X, Y]


def test_resume_gives_identical_store(tmp_path):
    data = _data()
    full = _writer(tmp_path / "full.zarr")
    for i in range(N):
        full.write_trajectory(i, {k: v[i] for k, v in data.items()})
    full.finalize()

    part = _writer(tmp_path / "resumed.zarr")
    for i in (2, 0):  # out of order, then "killed"
        part.write_trajectory(i, {k: v[i] for k, v in data.items()})
    del part
    again = _writer(tmp_path / "resumed.zarr")
    assert [again.is_done(i) for i in range(N)] == [True, False, True, False]
    for i in range(N):
        if not again.is_done(i):
            again.write_trajectory(i, {k: v[i] for k, v in data.items()})
    again.write_trajectory(0, {k: v[0] for k, v in data.items()})  # idempotent
    again.finalize()
    assert _tree_digest(tmp_path / "full.zarr") == _tree_digest(tmp_path / "resumed.zarr")
    # a finished store with the same schema counts as done
    done = _writer(tmp_path / "full.zarr")
    assert all(done.is_done(i) for i in range(N)) and done.finalize() == tmp_path / "full.zarr"


def test_partial_store_is_invisible_until_finalize(tmp_path):
    w = _writer(tmp_path / "s.zarr")
    w.write_trajectory(0, {k: v[0] for k, v in _data().items()})
    assert not (tmp_path / "s.zarr").exists()
    with pytest.raises(DataError, match="not written"):
        w.finalize()


def test_schema_change_restarts_partial_and_rejects_finished(tmp_path):
    w = _writer(tmp_path / "s.zarr")
    w.write_trajectory(0, {k: v[0] for k, v in _data().items()})
    w2 = FieldStoreWriter(tmp_path / "s.zarr", VARS, N, np.linspace(0.0, 3.0, T),
                          {"x": np.arange(X) / X, "y": np.arange(Y) / Y})
    assert not w2.is_done(0)  # different time axis: the partial store is not reused
    for i in range(N):
        w2.write_trajectory(i, {k: v[i] for k, v in _data().items()})
    w2.finalize()
    with pytest.raises(DataError, match="different schema"):
        _writer(tmp_path / "s.zarr")
    _writer(tmp_path / "s.zarr", overwrite=True)  # allowed


def test_steady_store(tmp_path):
    rng = np.random.default_rng(1)
    src, sol = rng.normal(size=(3, X, Y)).astype(np.float32), rng.normal(size=(3, X, Y)).astype(np.float32)
    path = write_store(tmp_path / "p.zarr", {"source": src, "solution": sol},
                       {"source": {"role": "source"}, "solution": {"role": "solution"}}, None,
                       {"x": np.arange(X) / X, "y": np.arange(Y) / Y})
    s = open_store(path)
    assert s.steady and s.time is None and s.is_static("solution")
    np.testing.assert_array_equal(s.trajectory(2)["solution"], sol[2])
    assert s.to_xarray()["solution"].dims == ("trajectory", "x", "y")


@pytest.mark.parametrize(
    "fields, match",
    [({"u": np.zeros((T, X, Y))}, "missing variables"),
     ({"u": np.zeros((T, Y, X)), "c": np.zeros((X, Y))}, "variable 'u' trajectory 0 has shape"),
     ({"u": np.full((T, X, Y), np.nan), "c": np.zeros((X, Y))}, "NaN/Inf at index \\[0, 0, 0\\]")],
)
def test_writer_errors(tmp_path, fields, match):
    with pytest.raises(DataError, match=match):
        _writer(tmp_path / "s.zarr").write_trajectory(0, fields)


def test_writer_rejects_bad_schema(tmp_path):
    with pytest.raises(DataError, match="role"):
        FieldStoreWriter(tmp_path / "a.zarr", {"u": {"role": "velocity"}}, 1, None, {"x": np.arange(3)})
    with pytest.raises(DataError, match="boundary condition"):
        FieldStoreWriter(tmp_path / "a.zarr", {"u": {"role": "state"}}, 1, np.arange(2), {"x": np.arange(3)},
                         {"boundary_conditions": {"x": "reflecting"}})
    with pytest.raises(DataError, match="clashes"):
        FieldStoreWriter(tmp_path / "a.zarr", {"time": {"role": "state"}}, 1, np.arange(2), {"x": np.arange(3)})


def test_reader_errors_name_file_variable_index(tmp_path):
    data = _data()
    path = write_store(tmp_path / "s.zarr", data, VARS, np.arange(T), {"x": np.arange(X), "y": np.arange(Y)})
    s = FieldStore(path)
    with pytest.raises(DataError, match="no variable 'rho'.*has \\['u', 'c'\\]"):
        s.read("rho", 0, 0)
    # corrupt one chunk with NaN through zarr itself
    zarr.open_group(str(path), mode="r+")["u"][2, 3, 1, 1] = np.nan
    with pytest.raises(DataError, match=r"s\.zarr: variable 'u' has NaN/Inf at trajectory 2, time index 3"):
        FieldStore(path).read("u", 2, 3)
    with pytest.raises(DataError, match="no such store|not a zarr store"):
        FieldStore(tmp_path / "missing.zarr")
    g = zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    g.attrs["layout"] = "series"
    with pytest.raises(DataError, match="layout 'series' is not a gridded-field store"):
        FieldStore(tmp_path / "other.zarr")


def test_reader_rejects_wrong_dims(tmp_path):
    path = write_store(tmp_path / "s.zarr", _data(), VARS, np.arange(T), {"x": np.arange(X), "y": np.arange(Y)})
    g = zarr.open_group(str(path), mode="r+")
    attrs = dict(g["c"].attrs)
    del g["c"]
    bad = g.create_array("c", shape=(N, T, X, Y), chunks=(1, 1, X, Y), dtype="float32",
                         dimension_names=["trajectory", "time", "x", "y"])
    bad.attrs.update(attrs)
    zarr.consolidate_metadata(str(path))
    with pytest.raises(DataError, match="variable 'c' has dims \\['trajectory', 'time', 'x', 'y'\\]; expected"):
        FieldStore(path)


def test_pickle_reopens_handle(tmp_path):
    import pickle

    path = write_store(tmp_path / "s.zarr", _data(), VARS, np.arange(T), {"x": np.arange(X), "y": np.arange(Y)})
    s = FieldStore(path, check_finite=True)
    s2 = pickle.loads(pickle.dumps(s))
    assert s2._group is None
    np.testing.assert_array_equal(s2.read("u", 3, 1), s.read("u", 3, 1))


@pytest.mark.parametrize("compressor", ["lz4", "zstd", None])
def test_truncated_chunk_is_a_clear_error(tmp_path, compressor):
    path = write_store(tmp_path / "s.zarr", _data(), VARS, np.arange(T), {"x": np.arange(X), "y": np.arange(Y)},
                       compressor=compressor)
    chunk = path / "u" / "c" / "3" / "1" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:50])
    with pytest.raises(DataError, match=r"chunk .*u/c/3/1/0/0 of variable 'u' (is truncated|cannot be decoded)"):
        FieldStore(path).read("u", 3, 1)


def test_huge_finite_values_are_not_reported_as_nan(tmp_path):
    data = _data()
    data["u"][0, 0] = 3e38  # the float32 sum overflows; every value is still finite
    path = write_store(tmp_path / "s.zarr", data, VARS, np.arange(T), {"x": np.arange(X), "y": np.arange(Y)})
    np.testing.assert_array_equal(FieldStore(path).read("u", 0, 0), data["u"][0, 0])


def test_fsspec_url(tmp_path):
    data = _data()
    path = write_store(tmp_path / "s.zarr", data, VARS, np.arange(T), {"x": np.arange(X), "y": np.arange(Y)})
    s = open_store(f"file://{path}")
    assert not s._fast  # URLs go through zarr/fsspec
    np.testing.assert_array_equal(s.read("u", 2, 4), data["u"][2, 4])
    np.testing.assert_array_equal(s.to_xarray()["c"].values, data["c"])
