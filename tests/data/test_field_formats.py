"""Readers/converters: fixtures written directly in each external layout (axis order from the format specs in
shared/anchors), converted, and compared value for value; lazy reading; clear errors; `data info`."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from netcdf_files import write_nc

from sciformer.data.commands import main as data_main
from sciformer.data.formats import detect_format, open_source
from sciformer.data.formats.pdebench import convert_pdebench, open_pdebench
from sciformer.data.formats.poseidon import convert_poseidon, open_poseidon
from sciformer.data.formats.well import convert_well
from sciformer.data.store import FieldStore, describe
from sciformer.errors import DataError

netCDF4 = pytest.importorskip("netCDF4")
RNG = np.random.default_rng(0)


def _rand(*shape):
    return RNG.normal(size=shape).astype(np.float32)


# ---- Poseidon NetCDF ---------------------------------------------------------------------------
_nc = write_nc


def test_poseidon_velocity_round_trip(tmp_path):
    vel = _rand(3, 4, 3, 8, 6)  # [N, T, C=(u, v, tracer), X, Y]
    src = _nc(tmp_path / "NS-PwC.nc", {"velocity": (("member", "time", "channel", "x", "y"), vel)})
    assert detect_format(str(src)) == "poseidon"
    out = convert_poseidon(src, tmp_path / "ns.zarr", bc="periodic")
    s = FieldStore(out)
    assert s.variables == ["u", "v", "tracer"] and s.boundary_conditions == {"x": "periodic", "y": "periodic"}
    for i in range(3):
        tr = s.trajectory(i)
        for c, v in enumerate(["u", "v", "tracer"]):
            np.testing.assert_array_equal(tr[v], vel[i, :, c])
    np.testing.assert_array_equal(s.time, np.arange(4.0))
    lazy = open_poseidon(src)
    assert lazy.stats["u"] == {"mean": 0.0, "std": 0.391}  # Poseidon's constants for lazy reading
    np.testing.assert_array_equal(lazy.read("tracer", 2, 3), vel[2, 3, 2])


def test_poseidon_compressible_and_wave(tmp_path):
    data = _rand(2, 3, 5, 4, 4)
    out = convert_poseidon(_nc(tmp_path / "CE-RP.nc", {"data": (("n", "t", "c", "x", "y"), data)}), tmp_path / "ce.zarr")
    s = FieldStore(out)
    assert s.variables == ["rho", "u", "v", "p", "E"]
    np.testing.assert_array_equal(s.trajectory(1)["E"], data[1, :, 4])

    sol, c = _rand(2, 5, 4, 4), (3000 + 100 * _rand(2, 4, 4)).astype(np.float32)
    src = _nc(tmp_path / "Wave-Layer.nc", {"solution": (("n", "t", "x", "y"), sol), "c": (("n", "x", "y"), c)})
    s = FieldStore(convert_poseidon(src, tmp_path / "wave.zarr"))
    assert s.roles == {"u": "state", "c": "coefficient"}
    np.testing.assert_array_equal(s.trajectory(1)["u"], sol[1])
    np.testing.assert_array_equal(s.trajectory(1)["c"], c[1])


def test_poseidon_steady_layouts(tmp_path):
    src_, sol = _rand(3, 4, 4), _rand(3, 4, 4)
    p = _nc(tmp_path / "Poisson-Gauss.nc", {"source": (("n", "x", "y"), src_), "solution": (("n", "x", "y"), sol)})
    s = FieldStore(convert_poseidon(p, tmp_path / "poisson.zarr"))
    assert s.steady and s.roles == {"source": "source", "solution": "solution"}
    np.testing.assert_array_equal(s.trajectory(2)["source"], src_[2])
    np.testing.assert_array_equal(s.trajectory(2)["solution"], sol[2])
    af = _rand(2, 2, 4, 4)  # SE-AF: [N, (shape, rho), X, Y]
    s = FieldStore(convert_poseidon(_nc(tmp_path / "SE-AF.nc", {"solution": (("n", "c", "x", "y"), af)}),
                                    tmp_path / "af.zarr"))
    assert s.steady and s.roles == {"shape": "coefficient", "rho": "solution"}
    np.testing.assert_array_equal(s.read("rho", 1), af[1, 1])


def test_poseidon_channel_name_errors(tmp_path):
    src = _nc(tmp_path / "X.nc", {"velocity": (("n", "t", "c", "x", "y"), _rand(1, 2, 3, 4, 4))})
    with pytest.raises(DataError, match="3 channels but 2 names"):
        open_poseidon(src, channels="u,v")
    assert open_poseidon(src, channels="a,b,c").variables == ["a", "b", "c"]


# ---- The Well --------------------------------------------------------------------------------
def _well(path: Path, B=2, T=4, X=6, Y=5):
    """A file following the_well docs/data_format.md."""
    fields = {"density": _rand(B, T, X, Y), "velocity": _rand(B, T, X, Y, 2), "stress": _rand(B, T, X, Y, 2, 2),
              "mask": _rand(X, Y)}
    with h5py.File(path, "w") as f:
        f.attrs.update({"dataset_name": "toy_flow", "grid_type": "cartesian", "n_spatial_dims": 2,
                        "n_trajectories": B, "simulation_parameters": ["Re"], "Re": 100.0})
        d = f.create_group("dimensions")
        d.attrs["spatial_dims"] = ["x", "y"]
        d["time"] = np.linspace(0, 0.3, T)
        d["x"], d["y"] = np.linspace(0, 1, X), np.linspace(0, 2, Y)
        bc = f.create_group("boundary_conditions")
        g = bc.create_group("x_periodic")
        g.attrs.update({"bc_type": "PERIODIC", "associated_dims": ["x"], "associated_fields": [],
                        "sample_varying": False, "time_varying": False})
        g["mask"] = np.ones(X, dtype=bool)
        g = bc.create_group("y_wall")
        g.attrs.update({"bc_type": "WALL", "associated_dims": ["y"]})
        m = np.zeros(Y, dtype=bool)
        m[0] = m[-1] = True
        g["mask"] = m
        sc = f.create_group("scalars")
        sc.attrs["field_names"] = ["Re"]
        sc["Re"] = 100.0
        for order, names in ((0, ["density", "mask"]), (1, ["velocity"]), (2, ["stress"])):
            grp = f.create_group(f"t{order}_fields")
            grp.attrs["field_names"] = names
            for n in names:
                ds = grp.create_dataset(n, data=fields[n])
                static = n == "mask"
                ds.attrs.update({"dim_varying": [True, True], "sample_varying": not static, "time_varying": not static})
    return fields


def test_well_round_trip(tmp_path):
    fields = _well(tmp_path / "toy.hdf5")
    assert detect_format(str(tmp_path / "toy.hdf5")) == "well"
    s = FieldStore(convert_well(tmp_path / "toy.hdf5", tmp_path / "toy.zarr"))
    assert s.variables == ["density", "mask", "velocity_x", "velocity_y", "stress_xx", "stress_xy", "stress_yx",
                           "stress_yy"]
    assert s.roles["mask"] == "coefficient" and s.roles["velocity_y"] == "state"
    assert s.boundary_conditions == {"x": "periodic", "y": "wall"}
    assert s.attrs["generator"]["parameters"]["Re"] == 100.0 and s.attrs["pde"] == "toy_flow"
    np.testing.assert_allclose(s.time, np.linspace(0, 0.3, 4))
    np.testing.assert_allclose(s.coords["y"], np.linspace(0, 2, 5))
    for i in range(2):
        tr = s.trajectory(i)
        np.testing.assert_array_equal(tr["density"], fields["density"][i])
        np.testing.assert_array_equal(tr["velocity_y"], fields["velocity"][i, ..., 1])
        np.testing.assert_array_equal(tr["stress_xy"], fields["stress"][i, ..., 0, 1])
        np.testing.assert_array_equal(tr["mask"], fields["mask"])  # not sample-varying: same for every trajectory


def test_well_stats_yaml_for_lazy_reading(tmp_path):
    base = tmp_path / "toy_flow"
    (base / "data" / "train").mkdir(parents=True)
    _well(base / "data" / "train" / "a.hdf5")
    (base / "stats.yaml").write_text(
        "mean:\n  density: 1.5\n  mask: 0.0\n  velocity: [0.1, 0.2]\n  stress: [[1, 2], [3, 4]]\n"
        "std:\n  density: 2.0\n  mask: 1.0\n  velocity: [1.1, 1.2]\n  stress: [[5, 6], [7, 8]]\n")
    src = open_source(base / "data" / "train" / "a.hdf5")
    assert src.stats["velocity_y"] == {"mean": 0.2, "std": 1.2}
    assert src.stats["stress_yx"] == {"mean": 3.0, "std": 7.0}


# ---- PDEBench --------------------------------------------------------------------------------
def test_pdebench_tensor_1d(tmp_path):
    u = _rand(3, 5, 16)  # [B, T, X]
    with h5py.File(tmp_path / "1D_Advection_Sols_beta0.1.hdf5", "w") as f:
        f["tensor"] = u
        f["x-coordinate"] = np.linspace(0, 1, 16)
        f["t-coordinate"] = np.linspace(0, 2, 6)  # one more entry than snapshots, as in PDEBench's 1-D files
    s = FieldStore(convert_pdebench(tmp_path / "1D_Advection_Sols_beta0.1.hdf5", tmp_path / "adv.zarr"))
    assert s.axes == ["x"] and s.spatial_shape == (16,)
    np.testing.assert_allclose(s.time, np.linspace(0, 2, 6)[:5])
    np.testing.assert_array_equal(s.trajectory(2)["u"], u[2])


def test_pdebench_darcy_and_compressible(tmp_path):
    sol, nu = _rand(2, 1, 8, 8), _rand(2, 8, 8)
    with h5py.File(tmp_path / "2D_DarcyFlow_beta1.0.hdf5", "w") as f:
        f["tensor"], f["nu"] = sol, nu
    s = FieldStore(convert_pdebench(tmp_path / "2D_DarcyFlow_beta1.0.hdf5", tmp_path / "darcy.zarr"))
    assert s.steady and s.roles == {"nu": "coefficient", "solution": "solution"}
    np.testing.assert_array_equal(s.read("solution", 1), sol[1, 0])
    np.testing.assert_array_equal(s.read("nu", 0), nu[0])

    arrs = {k: _rand(2, 3, 8, 4) for k in ("density", "pressure", "Vx", "Vy")}
    with h5py.File(tmp_path / "2D_CFD.hdf5", "w") as f:
        for k, v in arrs.items():
            f[k] = v
        f["x-coordinate"], f["y-coordinate"], f["t-coordinate"] = np.arange(8.0), np.arange(4.0), np.arange(4.0)
    s = FieldStore(convert_pdebench(tmp_path / "2D_CFD.hdf5", tmp_path / "cfd.zarr"))
    assert s.variables == ["rho", "u", "v", "p"]
    np.testing.assert_array_equal(s.trajectory(1)["p"], arrs["pressure"][1])
    np.testing.assert_array_equal(s.trajectory(0)["v"], arrs["Vy"][0])


def test_pdebench_groups_and_incompressible(tmp_path):
    samples = [_rand(4, 6, 5, 2) for _ in range(3)]  # per sample: [T, X, Y, C]
    with h5py.File(tmp_path / "2D_diff-react_NA_NA.h5", "w") as f:
        for k, d in enumerate(samples):
            g = f.create_group(f"{k:04d}")
            g["data"] = d
            g["grid/x"], g["grid/y"], g["grid/t"] = np.linspace(-1, 1, 6), np.linspace(-1, 1, 5), np.linspace(0, 5, 4)
    s = FieldStore(convert_pdebench(tmp_path / "2D_diff-react_NA_NA.h5", tmp_path / "dr.zarr"))
    assert s.variables == ["u", "v"]
    np.testing.assert_allclose(s.coords["x"], np.linspace(-1, 1, 6))
    np.testing.assert_array_equal(s.trajectory(2)["v"], samples[2][..., 1])

    vel, part = _rand(2, 3, 4, 4, 2), _rand(2, 3, 4, 4, 1)
    with h5py.File(tmp_path / "ns_incom.h5", "w") as f:
        f["velocity"], f["particles"] = vel, part
    src = open_pdebench(tmp_path / "ns_incom.h5")
    np.testing.assert_array_equal(src.trajectory(1)["v"], vel[1, ..., 1])
    np.testing.assert_array_equal(src.trajectory(1)["particles"], part[1, ..., 0])


# ---- errors and info ---------------------------------------------------------------------------
def test_truncated_and_unknown_files(tmp_path):
    with h5py.File(tmp_path / "a.hdf5", "w") as f:
        f["tensor"] = _rand(8, 4, 64)
    raw = (tmp_path / "a.hdf5").read_bytes()
    (tmp_path / "cut.hdf5").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.hdf5: cannot open as HDF5.*truncated"):
        open_pdebench(tmp_path / "cut.hdf5")
    with h5py.File(tmp_path / "odd.h5", "w") as f:
        f["something"] = np.zeros(3)
    with pytest.raises(DataError, match=r"odd\.h5: unknown layout"):
        detect_format(str(tmp_path / "odd.h5"))
    with pytest.raises(DataError, match="unknown PDEBench layout"):
        open_pdebench(tmp_path / "odd.h5")


def test_nan_in_source_names_variable_and_index(tmp_path):
    vel = _rand(2, 3, 2, 4, 4)
    vel[1, 2, 1, 0, 0] = np.inf
    src = _nc(tmp_path / "NS-SL.nc", {"velocity": (("n", "t", "c", "x", "y"), vel)})
    with pytest.raises(DataError, match=r"variable 'v' has NaN/Inf at trajectory 1, time index 2"):
        open_poseidon(src).read("v", 1, 2)
    with pytest.raises(DataError, match="NS-SL.nc: variable 'v' has NaN/Inf at trajectory 1, time index 2"):
        convert_poseidon(src, tmp_path / "x.zarr")


def test_cli_convert_and_info(tmp_path, capsys):
    vel = _rand(2, 3, 2, 4, 4)
    src = _nc(tmp_path / "NS-SL.nc", {"velocity": (("n", "t", "c", "x", "y"), vel)})
    data_main(["convert", str(src), str(tmp_path / "sl.zarr"), "--from", "poseidon", "--option", "bc=periodic"])
    data_main(["info", str(tmp_path / "sl.zarr")])
    out = capsys.readouterr().out
    assert "converted" in out and "all values finite" in out and "boundary periodic" in out
    assert "u" in out and f"{vel[:, :, 0].astype(np.float64).mean():12.5g}".strip() in out
    import zarr

    zarr.open_group(str(tmp_path / "sl.zarr"), mode="r+")["v"][1, 2, 0, 0] = np.nan
    assert "NaN/Inf: variable 'v', trajectory 1, time indices [2]" in describe(tmp_path / "sl.zarr")


def test_poseidon_lead_time_matches_poseidon_convention(tmp_path):
    """21 snapshots: our t = (time[j] − time[i]) / span equals Poseidon's (t2 − t1) / 20 (DECISIONS)."""
    from sciformer.data.fields import FieldDataModule

    vel = _rand(10, 21, 2, 4, 4)
    src = _nc(tmp_path / "NS-SL.nc", {"velocity": (("n", "t", "c", "x", "y"), vel)})
    dm = FieldDataModule([str(src)], time_stride=2, max_snapshots=8)
    ds = dm.dataset("train")
    assert len(ds) == 8 * 36
    pairs = [(2 * i, 2 * j) for i in range(8) for j in range(i, 8)]
    for k in (0, 5, 35, 36 + 7):
        t1, t2 = pairs[k % 36]
        assert ds[k]["t"].item() == pytest.approx((t2 - t1) / 20)
    assert dm.spec["stats"]["u"] == {"mean": 0.0, "std": 0.391}  # Poseidon's constants when read lazily
