"""PDEBench files as PDEBench writes and reads them.

Fixtures are written with h5py from PDEBench's own layout code (commit 9754b4c, shared/anchors/
landscape-2026.md §4), not with our writer. The upstream line each convention comes from:

- NS-incompressible: ``pdebench/data_gen/src/data_io.py`` ``dims_for``: ``"velocity": (n_batch, n_frames,
  *grid_size, len(grid_size))``, ``"particles": (..., 1)``, ``"force": (n_batch, *grid_size, len(grid_size))``,
  ``"t": (n_batch, n_frames)``; ``h5_for``: float32, ``compression="lzf"``, ``chunks=(1, 1, *full_shape[2:])``,
  ``attrs["config"] = OmegaConf.to_yaml(config)``, file name ``f"{config['sim_name']}-{config['seed']}.h5"``.
  ``sim_ns_incomp_2d.py`` ``_store``: ``data_store["t"][:, frame_i] = t`` (every row written, one per batch
  member), ``velocity_extrapolation`` (config ``ns_incomp.yaml``: ``'ZERO'``) is the velocity boundary.
  PDEBench's loader ``pdebench/data_gen/src/pytorch_dataset.py`` ``HDF5Dataset._load_data`` returns
  ``ds_list[batch_idx][idx - last_count]`` for every dataset of the file: force, particles, t, velocity.
- Compressible NS 1/2/3-D: ``pdebench/models/fno/utils.py`` ``FNODataset``: ``f['density']`` ("batch, time,
  x,..."), ``'pressure'``, ``'Vx'``, ``'Vy'``, ``'Vz'`` (``len(idx_cfd)==5  # 3D``), ``f["x-coordinate"]``,
  ``"y-coordinate"``, ``"z-coordinate"``; file names such as ``3D_CFD_Rand_M1.0_Eta1e-08_Zeta1e-08_periodic_Train``
  and ``1D_CFD_Shock_Eta1.e-8_Zeta1.e-8_trans_Train`` name the boundary (periodic; trans = transmissive).
- ``t-coordinate`` has T+1 entries (PDEBench ``data_gen``: ``tc = arange(it_tot+1)*dt_save`` against ``it_tot``
  saved frames; shared/anchors/landscape-2026.md §4).
"""

from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from sciformer.data.formats import detect_format
from sciformer.data.formats.pdebench import convert_pdebench, open_pdebench
from sciformer.data.store import FieldStore
from sciformer.errors import DataError

NS_CONFIG = {"sim_name": "ns_incom_inhom_2d_512", "seed": 0, "grid_size": [8, 6], "velocity_extrapolation": "ZERO",
             "particle_extrapolation": "BOUNDARY", "force_extrapolation": "ZERO", "NU": 0.01, "DT": 5e-05,
             "n_steps": 700, "frame_int": 100, "n_batch": 3}


def write_ns_incom(folder: Path, rng, rows: np.ndarray | None = None) -> tuple[Path, dict]:
    """As data_io.h5_for + sim_ns_incomp_2d._store write it (n_frames = (n_steps − 1) // frame_int + 1 = 7)."""
    c = NS_CONFIG
    b, t, (x, y) = c["n_batch"], (c["n_steps"] - 1) // c["frame_int"] + 1, c["grid_size"]
    frames = c["DT"] * c["frame_int"] * np.arange(t)  # t = 0, 0.005, 0.01, ... (frame i at step i·frame_int)
    data = {"velocity": rng.normal(size=(b, t, x, y, 2)), "particles": rng.random((b, t, x, y, 1)),
            "force": rng.normal(size=(b, x, y, 2)),
            "t": np.broadcast_to(frames, (b, t)) if rows is None else rows}
    path = folder / f"{c['sim_name']}-{c['seed']}.h5"
    with h5py.File(path, "w") as f:
        f.attrs["config"] = yaml.safe_dump(c)
        f.attrs["latestIndex"] = t - 1
        for k, v in data.items():
            chunks = (1, 1, *v.shape[2:]) if v.ndim > 2 else None
            f.create_dataset(k, data=v.astype(np.float32), dtype="float32", compression="lzf", chunks=chunks,
                             shuffle=True)
    return path, {k: np.asarray(v, np.float32) for k, v in data.items()}


def test_ns_incom_time_rows_force_and_boundary(tmp_path):
    path, data = write_ns_incom(tmp_path, np.random.default_rng(0))
    assert detect_format(str(path)) == "pdebench"
    src = open_pdebench(path)
    assert src.variables == ["u", "v", "particles", "force_x", "force_y"]
    assert src.roles["force_x"] == src.roles["force_y"] == "forcing" and src.is_static("force_x")
    assert src.trajectory_time is None  # all rows agree: one shared time axis
    assert src.time[5] == pytest.approx(0.025, rel=1e-6)  # not 5.0 (a replaced time axis)
    np.testing.assert_array_equal(src.time, data["t"][0].astype(np.float64))
    assert src.boundary_conditions == {"x": "dirichlet", "y": "dirichlet"}  # velocity_extrapolation ZERO
    assert src.attrs["generator"]["parameters"]["NU"] == 0.01
    s = FieldStore(convert_pdebench(path, tmp_path / "ns.zarr"))
    for i in range(3):  # what HDF5Dataset returns for item i: force[i], particles[i], t[i], velocity[i]
        tr = s.trajectory(i)
        np.testing.assert_array_equal(tr["u"], data["velocity"][i, ..., 0])
        np.testing.assert_array_equal(tr["v"], data["velocity"][i, ..., 1])
        np.testing.assert_array_equal(tr["particles"], data["particles"][i, ..., 0])
        np.testing.assert_array_equal(tr["force_x"], data["force"][i, ..., 0])
        np.testing.assert_array_equal(tr["force_y"], data["force"][i, ..., 1])
    assert s.boundary_conditions == {"x": "dirichlet", "y": "dirichlet"}


def test_ns_incom_rows_that_differ_are_per_trajectory_time_grids(tmp_path):
    rows = np.stack([0.005 * np.arange(7), 0.01 * np.arange(7), 1.0 + 0.005 * np.arange(7)]).astype(np.float32)
    path, _ = write_ns_incom(tmp_path, np.random.default_rng(1), rows)
    src = open_pdebench(path)
    np.testing.assert_array_equal(src.trajectory_time, rows.astype(np.float64))
    s = FieldStore(convert_pdebench(path, tmp_path / "rows.zarr"))
    np.testing.assert_array_equal(s.trajectory_time, rows.astype(np.float64))
    np.testing.assert_array_equal(s.time, rows[0].astype(np.float64))
    with h5py.File(path, "a") as f:
        del f["t"]
        f["t"] = np.zeros((3, 4), np.float32)
    with pytest.raises(DataError, match=r"'t' has shape \(3, 4\); expected \[B, T\] = \(3, 7\)"):
        open_pdebench(path)


def _cfd(path: Path, rng, shape) -> dict:
    """A merged compressible-NS file (FNODataset's keys), t-coordinate with T+1 entries."""
    arrays = {k: rng.normal(size=shape).astype(np.float32) for k in ("density", "pressure", "Vx", "Vy", "Vz")
              [: 2 + len(shape) - 2]}
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f[k] = v
        for a, n in zip("xyz", shape[2:]):
            f[f"{a}-coordinate"] = np.linspace(0, 1, n, endpoint=False, dtype=np.float32)
        f["t-coordinate"] = 0.05 * np.arange(shape[1] + 1, dtype=np.float32)
    return arrays


def test_boundary_conditions_from_file_names(tmp_path):
    rng = np.random.default_rng(2)
    periodic = tmp_path / "2D_CFD_Rand_M0.1_Eta0.01_Zeta0.01_periodic_128_Train.hdf5"
    _cfd(periodic, rng, (2, 3, 4, 4))
    assert open_pdebench(periodic).boundary_conditions == {"x": "periodic", "y": "periodic"}
    shock = tmp_path / "1D_CFD_Shock_Eta1.e-8_Zeta1.e-8_trans_Train.hdf5"
    _cfd(shock, rng, (2, 3, 8))
    assert open_pdebench(shock).boundary_conditions == {"x": "open"}
    assert open_pdebench(shock, bc="neumann").boundary_conditions == {"x": "neumann"}  # the option wins
    plain = tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5"
    with h5py.File(plain, "w") as f:
        f["tensor"], f["nu"] = np.zeros((1, 1, 4, 4), np.float32), np.ones((1, 4, 4), np.float32)
    assert open_pdebench(plain).boundary_conditions == {"x": "unspecified", "y": "unspecified"}


def test_3d_compressible_file_converts_and_trains_lazily(tmp_path):
    from sciformer.data.fields import FieldDataModule

    rng = np.random.default_rng(3)
    path = tmp_path / "3D_CFD_Rand_M1.0_Eta1e-08_Zeta1e-08_periodic_Train.hdf5"
    arrays = _cfd(path, rng, (3, 4, 4, 3, 5))  # [B, T, X, Y, Z]
    src = open_pdebench(path)
    assert src.variables == ["rho", "u", "v", "w", "p"] and src.axes == ["x", "y", "z"]
    assert src.spatial_shape == (4, 3, 5) and len(src.time) == 4  # t-coordinate cut to the snapshots
    assert src.boundary_conditions == {a: "periodic" for a in "xyz"}
    store = FieldStore(convert_pdebench(path, tmp_path / "cfd3d.zarr"))
    for i in range(3):
        np.testing.assert_array_equal(store.trajectory(i)["w"], arrays["Vz"][i])
        np.testing.assert_array_equal(store.trajectory(i)["p"], arrays["pressure"][i])
    lazy = FieldDataModule([str(path)], sampler="next-step", batch_size=4, splits=(1.0, 0.0, 0.0))
    conv = FieldDataModule([str(tmp_path / "cfd3d.zarr")], sampler="next-step", batch_size=4, splits=(1.0, 0.0, 0.0))
    for v in store.variables:
        assert lazy.stats[v]["mean"] == pytest.approx(conv.stats[v]["mean"], rel=1e-9, abs=1e-12)
        assert lazy.stats[v]["std"] == pytest.approx(conv.stats[v]["std"], rel=1e-9)
    a, b = lazy.dataset("train"), conv.dataset("train")
    assert len(a) == len(b) == 9
    for k in (0, 4, 8):
        x, y = a[k], b[k]
        assert x["x"].shape == (5, 4, 3, 5)
        for key in ("x", "y", "t"):
            np.testing.assert_allclose(x[key].numpy(), y[key].numpy(), rtol=1e-6, atol=1e-6)
