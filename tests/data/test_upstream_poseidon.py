"""Poseidon's data sets as Poseidon's own dataset classes read them (camlab-ethz/poseidon ``scOT/problems``,
commit c53e3d6; shared/anchors/poseidon.md §2).

Fixtures are NetCDF4 files written with the netCDF4 library (Poseidon opens them with h5py) or, for
Helmholtz, an HDF5 file written with h5py, in the published layouts. Each test names the upstream line its
convention comes from and compares with a numpy restatement of that class's ``__getitem__``.
"""


import h5py
import numpy as np
import pytest
from netcdf_files import write_nc

from sciformer.data.formats import detect_format, open_source
from sciformer.data.formats.poseidon import convert_poseidon, open_poseidon
from sciformer.data.store import FieldStore

netCDF4 = pytest.importorskip("netCDF4")
RNG = np.random.default_rng(0)


_nc = write_nc


def _rand(*shape, loc=0.0):
    return (loc + RNG.normal(size=shape)).astype(np.float32)


def _z(x, mean, std):
    return (np.asarray(x, np.float32) - np.float32(mean)) / np.float32(std)


def test_ns_sl_is_read_transposed_as_shear_layer_does(tmp_path):
    """incompressible.py ``ShearLayer.__init__``: ``super().__init__(40000, "/NS-SL.nc", ..., transpose=True)``;
    ``IncompressibleBase.__getitem__``: ``inputs_v = reader["velocity"][i + start, t1, 0:2]`` then
    ``if self.transpose: inputs_v = inputs_v.transpose(-2, -1)``, normalised with CONSTANTS (u 0/0.391,
    v 0/0.356)."""
    vel = _rand(2, 3, 2, 6, 4)  # [N, T, 2, X, Y]; X != Y shows the axis swap
    path = _nc(tmp_path / "NS-SL.nc", {"velocity": (("n", "t", "c", "x", "y"), vel)})
    src = open_poseidon(path)
    assert src.spatial_shape == (4, 6) and src.variables == ["u", "v"]
    for i, t in ((0, 0), (1, 2)):
        ref = np.swapaxes(vel[i, t, 0:2], -2, -1)
        np.testing.assert_array_equal(src.read("u", i, t), ref[0])
        np.testing.assert_array_equal(src.read("v", i, t), ref[1])
        np.testing.assert_allclose(_z(src.read("v", i, t), src.stats["v"]["mean"], src.stats["v"]["std"]),
                                   (ref[1] - 0.0) / 0.356, rtol=1e-6)
    s = FieldStore(convert_poseidon(path, tmp_path / "sl.zarr"))
    np.testing.assert_array_equal(s.trajectory(1)["u"], np.swapaxes(vel[1, :, 0], -2, -1))
    ns = open_poseidon(_nc(tmp_path / "NS-PwC.nc", {"velocity": (("n", "t", "c", "x", "y"), _rand(1, 2, 3, 6, 4))}))
    assert ns.spatial_shape == (6, 4)  # the other NS sets keep the file's order (transpose=False default)


@pytest.mark.parametrize("stem, offset", [("CE-RP", 0.215), ("CE-CRP", 0.553), ("CE-KH", 1.0), ("CE-Gauss", 2.513),
                                          ("CE-RPUI", 1.33)])
def test_ce_family_presets(tmp_path, stem, offset):
    """compressible.py ``CompressibleBase.__getitem__``: ``inputs = reader["data"][i + start, t1, 0:4]``;
    ``inputs[3] = inputs[3] - self.mean_pressure``; ``(inputs - CONSTANTS["mean"]) / CONSTANTS["std"]``
    (normalization_constants.py: mean [0.80, 0, 0, 0], std [0.31, 0.391, 0.356, 0.185]); ``Riemann``:
    ``mean_pressure = 0.215`` (CRP 0.553, KH 1.0, Gauss 2.513, RPUI 1.33). Channel 4 is never read."""
    data = _rand(2, 3, 5, 4, 4, loc=1.0)
    path = _nc(tmp_path / f"{stem}.nc", {"data": (("n", "t", "c", "x", "y"), data)})
    src = open_source(path)
    assert src.variables == ["rho", "u", "v", "p", "E"]
    ref = data[1, 2, 0:4].copy()
    ref[3] -= offset
    ref = (ref - np.array([0.80, 0, 0, 0], np.float32)[:, None, None]) / \
        np.array([0.31, 0.391, 0.356, 0.185], np.float32)[:, None, None]
    for c, v in enumerate(["rho", "u", "v", "p"]):
        np.testing.assert_allclose(_z(src.read(v, 1, 2), src.stats[v]["mean"], src.stats[v]["std"]), ref[c],
                                   rtol=1e-5, atol=1e-5)
    e = data[:, :, 4].astype(np.float64)  # no Poseidon constant: a streaming pass over the file
    assert src.stats["E"]["mean"] == pytest.approx(e.mean(), rel=1e-9)
    assert src.stats["E"]["std"] == pytest.approx(e.std(), rel=1e-9)


def test_richtmyer_meshkov_and_rayleigh_taylor(tmp_path):
    """compressible.py ``RichtmyerMeshkov``: ``reader["solution"][i + start, t1, 0:4]`` with mean [1.1964245,
    -7.164812e-06, 2.8968952e-06, 1.5648036], std [0.5543239, 0.24304213, 0.2430597, 0.89639103];
    ``RayleighTaylor``: channels 0:4 and ``g = reader["solution"][..., 5:6]`` normalised with mean[4] =
    -1.7055787, std[4] = 0.40131348 (channel 4 unused)."""
    rm = _rand(2, 3, 5, 4, 4, loc=1.0)
    src = open_poseidon(_nc(tmp_path / "CE-RM.nc", {"solution": (("n", "t", "c", "x", "y"), rm)}))
    assert src.variables == ["rho", "u", "v", "p", "tracer"]
    assert src.stats["u"] == {"mean": -7.164812e-06, "std": 0.24304213}
    np.testing.assert_array_equal(src.read("tracer", 1, 2), rm[1, 2, 4])
    rt = _rand(2, 3, 6, 4, 4)
    path = _nc(tmp_path / "GCE-RT.nc", {"solution": (("n", "t", "c", "x", "y"), rt)})
    src = open_poseidon(path)
    assert src.variables == ["rho", "u", "v", "p", "tracer", "phi"]
    np.testing.assert_allclose(_z(src.read("phi", 0, 1), src.stats["phi"]["mean"], src.stats["phi"]["std"]),
                               (rt[0, 1, 5] + 1.7055787) / 0.40131348, rtol=1e-5)
    s = FieldStore(convert_poseidon(path, tmp_path / "rt.zarr"))
    np.testing.assert_array_equal(s.trajectory(1)["phi"], rt[1, :, 5])
    np.testing.assert_array_equal(s.trajectory(0)["p"], rt[0, :, 3])


def test_airfoil_presets(tmp_path):
    """compressible.py ``Airfoil``: inputs ``solution[i, 0]`` (not normalised), labels ``solution[i, 1]``
    with mean 0.92984116, std 0.10864315."""
    af = _rand(2, 2, 4, 4, loc=1.0)
    src = open_source(_nc(tmp_path / "SE-AF.nc", {"solution": (("n", "c", "x", "y"), af)}))
    assert src.steady and src.roles == {"shape": "coefficient", "rho": "solution"}
    assert src.stats == {"shape": {"mean": 0.0, "std": 1.0}, "rho": {"mean": 0.92984116, "std": 0.10864315}}
    np.testing.assert_array_equal(src.read("shape", 1), af[1, 0])


def test_helmholtz_sample_groups(tmp_path):
    """helmholtz.py ``Helmholtz``: ``Helmholtz.h5``; ``reader["Sample_" + str(idx + start)]`` with ``["a"]``
    (input ``a − 1``), ``["bc"]`` (``b * torch.ones_like(inputs)``: a constant channel) and ``["u"]`` (labels,
    mean 0.11523915668552, std 0.8279975746000605). Samples are indexed by number (Sample_10 after Sample_9)."""
    n = 12
    a, u, bc = _rand(n, 6, 6, loc=1.0), _rand(n, 6, 6), _rand(n)
    path = tmp_path / "Helmholtz.h5"
    with h5py.File(path, "w") as f:
        for i in range(n):
            g = f.create_group(f"Sample_{i}")
            g["a"], g["u"], g["bc"] = a[i], u[i], bc[i]
    assert detect_format(str(path)) == "poseidon"
    src = open_source(path)
    assert src.steady and src.n_trajectories == n and src.variables == ["a", "bc", "u"]
    assert src.roles == {"a": "coefficient", "bc": "coefficient", "u": "solution"}
    for i in (2, 10, 11):
        np.testing.assert_array_equal(src.read("u", i), u[i])
        np.testing.assert_array_equal(src.read("bc", i), np.full((6, 6), bc[i], np.float32))
        # Poseidon's input channel 0 is a − 1, unnormalised: our preset (mean 1, std 1) gives the same
        np.testing.assert_allclose(_z(src.read("a", i), src.stats["a"]["mean"], src.stats["a"]["std"]), a[i] - 1)
    assert src.stats["u"] == {"mean": 0.11523915668552, "std": 0.8279975746000605}
    s = FieldStore(convert_poseidon(path, tmp_path / "helmholtz.zarr"))
    assert s.steady and s.boundary_conditions == {"x": "dirichlet", "y": "dirichlet"}
    np.testing.assert_array_equal(s.read("a", 10), a[10])
    np.testing.assert_array_equal(s.read("bc", 9), np.full((6, 6), bc[9], np.float32))


def test_kolmogorov_flow_channels(tmp_path):
    """incompressible.py ``KolmogorovFlow``: ``reader["solution"][i + start, t1, 0:2]`` = u, v with
    mean -2.2424793e-13 / 4.1510376e-12, std 0.22017328 / 0.22078253 (the forcing channel is computed, not read)."""
    sol = _rand(2, 3, 2, 4, 4)
    src = open_poseidon(_nc(tmp_path / "FNS-KF.nc", {"solution": (("n", "t", "c", "x", "y"), sol)}))
    assert src.variables == ["u", "v"] and src.stats["v"] == {"mean": 4.1510376e-12, "std": 0.22078253}
    np.testing.assert_array_equal(src.read("v", 1, 2), sol[1, 2, 1])
