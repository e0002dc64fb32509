"""The Well read exactly as The Well's own reader sees it.

Fixtures are written with h5py from The Well's layout specification (the_well ``docs/data_format.md``: root
attrs, ``dimensions``, ``boundary_conditions``, ``scalars``, ``t{0,1,2}_fields``; float32 fields, float64
root parameters), not with our writer. Each fixture is checked by :func:`_conforms` (the rules of the_well's
``scripts/check_thewell_formatting.py``, which the ``the_well`` 1.2 wheel does not ship, restated here) and is
read by ``the_well.data.WellDataset``, whose output (field names, channel order, boundary conditions,
normalised values, time grid) is the reference. Fields constant along an axis in the spec's layout (axis
dropped) are compared with ``the_well.utils.export.hdf5_to_xarray``, The Well's reader for that layout
(``WellDataset._pad_axes`` tiles and so needs the axis kept with length 1).
"""

from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from sciformer.data.formats import open_source
from sciformer.data.formats.source import convert
from sciformer.data.formats.well import open_well
from sciformer.data.store import FieldStore

the_well = pytest.importorskip("the_well")
from the_well.data import WellDataset  # noqa: E402
from the_well.data.normalization import ZScoreNormalization  # noqa: E402

# WellDataset warns that a 2-D boundary mask is judged per edge: that is the rule under test
pytestmark = pytest.mark.filterwarnings("ignore:Only axis-aligned boundary:RuntimeWarning")
B, T, X, Y = 2, 4, 6, 5
CODES = {"wall": 0, "open": 1, "periodic": 2}  # the_well.data.datasets.BoundaryCondition


def _f32(rng, *shape):
    return rng.normal(size=shape).astype(np.float32)


def write_well(path: Path, rng, *, profile_layout="dropped", time_rows=False) -> dict:
    """One file of a 2-D data set; returns its arrays as stored."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"density": _f32(rng, B, T, X, Y), "velocity": _f32(rng, B, T, X, Y, 2),
              "stress": _f32(rng, B, T, X, Y, 2, 2), "obstacle": _f32(rng, X, Y),
              # constant along y (dim_varying [True, False]): the spec drops the axis
              "profile": _f32(rng, B, T, X) if profile_layout == "dropped" else _f32(rng, B, T, X, 1)}
    time = 0.1 * np.arange(T, dtype=np.float32)
    if time_rows:
        time = np.stack([time, 0.5 + 0.2 * np.arange(T, dtype=np.float32)])  # [B, T], different dt per trajectory
    with h5py.File(path, "w") as f:
        f.attrs.update({"dataset_name": "toy_flow", "grid_type": "cartesian", "n_spatial_dims": 2,
                        "n_trajectories": B, "simulation_parameters": ["Re"], "Re": 0.7})  # float64 attr
        d = f.create_group("dimensions")
        d.attrs["spatial_dims"] = ["x", "y"]
        d.create_dataset("time", data=time).attrs["sample_varying"] = time_rows
        for axis, n in (("x", X), ("y", Y)):
            c = d.create_dataset(axis, data=np.linspace(0, 1, n, dtype=np.float32))
            c.attrs.update({"sample_varying": False, "time_varying": False})
        bc = f.create_group("boundary_conditions")
        g = bc.create_group("xy_wall")  # a 2-D mask: edges x=0 and y=0 fully walled, x=-1 and y=-1 in part only
        g.attrs.update({"bc_type": "WALL", "associated_dims": ["x", "y"], "associated_fields": [],
                        "sample_varying": False, "time_varying": False})
        mask = np.zeros((X, Y), bool)
        mask[0, :] = mask[:, 0] = True
        mask[-1, -2:] = mask[-2:, -1] = True  # corners set: a first/last-cell test would call these walls
        g["mask"] = mask
        g["values"] = np.zeros(int(mask.sum()), np.float32)
        sc = f.create_group("scalars")
        sc.attrs["field_names"] = ["Re", "Ma"]
        for k, v in (("Re", 0.7), ("Ma", 0.3)):  # float32(1) datasets, as in the spec
            sc.create_dataset(k, data=np.array(v, np.float32)).attrs.update({"sample_varying": False,
                                                                              "time_varying": False})
        layout = {0: ["density", "obstacle", "profile"], 1: ["velocity"], 2: ["stress"]}
        for order, names in layout.items():
            grp = f.create_group(f"t{order}_fields")
            grp.attrs["field_names"] = names
            for k in names:
                ds = grp.create_dataset(k, data=arrays[k])
                static = k == "obstacle"
                ds.attrs.update({"dim_varying": [True, k != "profile"], "sample_varying": not static,
                                 "time_varying": not static})
                if order == 2:
                    ds.attrs.update({"symmetric": False, "antisymmetric": False})
    return arrays


def _stats(arrays: dict, root: Path) -> dict:
    out = {k: {} for k in ("mean", "std", "mean_delta", "std_delta")}
    for k, order in (("density", 0), ("obstacle", 0), ("profile", 0), ("velocity", 1), ("stress", 2)):
        a = arrays[k].astype(np.float64)
        ax = tuple(range(a.ndim - order))
        out["mean"][k], out["std"][k] = a.mean(ax).tolist(), a.std(ax).tolist()
        if k != "obstacle":
            dl = np.diff(a, axis=1)
            out["mean_delta"][k], out["std_delta"][k] = dl.mean(ax).tolist(), dl.std(ax).tolist()
    (root / "stats.yaml").write_text(yaml.safe_dump(out))
    return out


def _conforms(path: Path) -> None:
    """The format checker's rules: root attrs, dimensions, field shapes (dim_varying-false axes dropped or
    kept with length 1), scalars, boundary-condition masks."""
    with h5py.File(path, "r") as f:
        for a in ("n_spatial_dims", "n_trajectories", "dataset_name", "grid_type", "simulation_parameters"):
            assert a in f.attrs
        assert all(p in f.attrs for p in f.attrs["simulation_parameters"])
        dims = list(f["dimensions"].attrs["spatial_dims"])
        assert len(dims) == f.attrs["n_spatial_dims"] and "time" in f["dimensions"]
        for d in dims:
            assert {"sample_varying", "time_varying"} <= set(f["dimensions"][d].attrs)
        for order in range(3):
            g = f[f"t{order}_fields"]
            for name in g.attrs["field_names"]:
                ds, k = g[name], 0
                if ds.attrs["sample_varying"]:
                    assert ds.shape[k] == f.attrs["n_trajectories"]
                    k += 1
                if ds.attrs["time_varying"]:
                    assert ds.shape[k] == f["dimensions"]["time"].shape[-1]
                    k += 1
                assert len(ds.attrs["dim_varying"]) == len(dims)
                for d, varies in zip(dims, ds.attrs["dim_varying"]):
                    if varies:
                        assert ds.shape[k] == f["dimensions"][d].shape[-1]
                        k += 1
                    elif ds.ndim == k + len(dims) - list(ds.attrs["dim_varying"]).count(False) + order + 1:
                        k += 1  # kept with length 1
        for name in f["scalars"].attrs["field_names"]:
            s = f["scalars"][name]
            assert s.ndim == int(s.attrs["sample_varying"]) + int(s.attrs["time_varying"])
        for g in f["boundary_conditions"].values():
            lead = int(g.attrs["sample_varying"]) + int(g.attrs["time_varying"])
            for i, d in enumerate(g.attrs["associated_dims"]):
                assert g["mask"].shape[lead + i] == f["dimensions"][d].shape[-1]


@pytest.fixture
def well_dir(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "toy_flow"
    arrays = write_well(root / "data" / "train" / "toy_flow_0.hdf5", rng, profile_layout="singleton")
    _stats(arrays, root)
    return root, arrays


def test_fixture_conforms_to_the_well_spec(tmp_path):
    rng = np.random.default_rng(1)
    for layout in ("dropped", "singleton"):
        write_well(tmp_path / f"{layout}.hdf5", rng, profile_layout=layout)
        _conforms(tmp_path / f"{layout}.hdf5")


def test_names_order_bcs_and_normalisation_match_well_dataset(well_dir):
    root, arrays = well_dir
    ref = WellDataset(path=str(root), well_split_name="train", use_normalization=True,
                      normalization_type=ZScoreNormalization, n_steps_input=1, n_steps_output=1)
    src = open_well(root / "data" / "train" / "toy_flow_0.hdf5")
    states = [v for v in src.variables if not src.is_static(v)]
    static = [v for v in src.variables if src.is_static(v)]
    meta = ref.metadata
    assert states == [n for o in range(3) for n in meta.field_names[o]]  # names and channel order
    assert static == [n for o in range(3) for n in meta.constant_field_names[o]] == ["obstacle"]
    assert src.roles["obstacle"] == "coefficient"
    sample = ref[5]  # trajectory 5 // (T - 1) = 1, input step 5 % (T - 1) = 2, target step 3
    # WellDataset._padding_bcs: a WALL side needs its whole edge masked, everything else defaults to OPEN
    assert sample["boundary_conditions"].tolist() == [[0, 1], [0, 1]]
    assert src.boundary_conditions == {"x": ["wall", "open"], "y": ["wall", "open"]}
    assert [[CODES[s] for s in src.boundary_conditions[a]] for a in ("x", "y")] == \
        sample["boundary_conditions"].tolist()

    def norm(name, t):
        m, s = src.stats[name]["mean"], src.stats[name]["std"]
        return (src.read(name, 1, t) - m) / s

    for c, name in enumerate(states):
        np.testing.assert_allclose(norm(name, 2), sample["input_fields"][0, ..., c].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(norm(name, 3), sample["output_fields"][0, ..., c].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm("obstacle", None), sample["constant_fields"][..., 0].numpy(), rtol=1e-5,
                               atol=1e-5)
    # the constant-along-y field, stored [B, T, X, 1]: broadcast over y
    np.testing.assert_array_equal(src.read("profile", 1, 2), np.repeat(arrays["profile"][1, 2], Y, axis=1))


def test_parameters_keep_float64_value_and_lists(well_dir):
    root, _ = well_dir
    params = open_well(root / "data" / "train" / "toy_flow_0.hdf5").attrs["generator"]["parameters"]
    assert params["Re"] == 0.7 and type(params["Re"]) is float  # not 0.699999988 (float32)
    assert params["Ma"] == 0.3  # only a float32 /scalars dataset: its shortest decimal
    assert params["simulation_parameters"] == ["Re"]  # a one-item list stays a list


def test_constant_axis_dropped_layout_matches_the_well_export(tmp_path):
    from the_well.utils.export import hdf5_to_xarray

    rng = np.random.default_rng(2)
    path = tmp_path / "toy_flow_dropped.hdf5"
    arrays = write_well(path, rng, profile_layout="dropped")
    src = open_well(path)
    with h5py.File(path, "r") as f:
        ref = hdf5_to_xarray(f, backend="numpy")
        profile = np.asarray(ref["profile"].transpose("sample", "time", "x", "y").values)
    for i in range(B):
        tr = src.trajectory(i, ["profile", "density"])
        np.testing.assert_array_equal(tr["profile"], profile[i])
        np.testing.assert_array_equal(tr["profile"], np.repeat(arrays["profile"][i][..., None], Y, axis=-1))
        np.testing.assert_array_equal(tr["density"], arrays["density"][i])
    store = FieldStore(convert(src, tmp_path / "dropped.zarr", progress=False))
    np.testing.assert_array_equal(store.read("profile", 1, 3), profile[1, 3])


def test_per_trajectory_time_grid(tmp_path):
    """``dimensions/time`` [B, T] with sample_varying: each trajectory keeps its own times; the lead time is the
    trajectory's own gap over the store's span (DECISIONS' rule, one span per store), in the lazy source and in
    the converted store alike; WellDataset's time grid gives the same gaps."""
    from sciformer.data.fields import FieldDataModule

    rng = np.random.default_rng(3)
    root = tmp_path / "toy_flow"
    arrays = write_well(root / "data" / "train" / "toy_flow_0.hdf5", rng, profile_layout="singleton", time_rows=True)
    _stats(arrays, root)
    _conforms(root / "data" / "train" / "toy_flow_0.hdf5")
    src = open_well(root / "data" / "train" / "toy_flow_0.hdf5")
    rows = np.stack([0.1 * np.arange(T), 0.5 + 0.2 * np.arange(T)]).astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(src.trajectory_time, rows)
    span = rows[:, -1].max() - rows[:, 0].min()  # 1.1 − 0 = 1.1
    ref = WellDataset(path=str(root), well_split_name="train", n_steps_input=1, n_steps_output=1,
                      normalize_time_grid=False)
    for k in (0, 4):  # trajectory 0 step 0 → 1, trajectory 1 step 1 → 2
        s = ref[k]
        gap = float(s["output_time_grid"][0] - s["input_time_grid"][0])
        assert gap == pytest.approx(rows[k // (T - 1), k % (T - 1) + 1] - rows[k // (T - 1), k % (T - 1)])
    store = FieldStore(convert(src, tmp_path / "rows.zarr", progress=False))
    np.testing.assert_array_equal(store.trajectory_time, rows)
    for path in (str(root / "data" / "train" / "toy_flow_0.hdf5"), str(tmp_path / "rows.zarr")):
        dm = FieldDataModule([path], sampler="next-step", splits=(1.0, 0.0, 0.0))
        ds = dm.dataset("train")
        assert len(ds) == B * (T - 1)
        got = [ds[k]["t"].item() for k in range(len(ds))]
        want = [(rows[i, j + 1] - rows[i, j]) / span for i in range(B) for j in range(T - 1)]
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert open_source(str(tmp_path / "rows.zarr")).trajectory_time is not None


def test_info_columns_never_run_together(tmp_path):
    """``sciformer data info`` on a store with long Well names (``magnetic_field_xx`` ...): every row splits
    into name, role, units, shape, statistics."""
    from sciformer.data.store import describe

    path = tmp_path / "mhd.hdf5"
    write_well(path, np.random.default_rng(4))
    with h5py.File(path, "a") as f:
        f["t2_fields"].move("stress", "magnetic_field_tensor")
        f["t2_fields"].attrs["field_names"] = ["magnetic_field_tensor"]
    store = FieldStore(convert(open_well(path), tmp_path / "mhd.zarr", progress=False))
    rows = {line.split()[0]: line.split() for line in describe(store.path).splitlines()[1:] if line.strip()}
    for v in store.variables:
        assert rows[v][1] == store.roles[v] and rows[v][2] == store.units[v], rows[v]
    assert "magnetic_field_tensor_xy" in rows
