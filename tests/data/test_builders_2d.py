"""`sciformer data build` for the 2-D builders: canonical layout and attributes, physics of the written
fields, resumability (an interrupted build finishes identical to an uninterrupted one), worker-count
independence, and use by FieldDataModule."""

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from sciformer.data import builders_2d
from sciformer.data.commands import BUILDERS, _resolve, main
from sciformer.data.store import FieldStore
from sciformer.errors import DataError
from sciformer.solvers.poisson_2d import laplacian_5point

N = 16
FAST = {"snapshots": 3, "t_end": 0.1, "workers": 1}
EXPECTED = {  # name: ({variable: role}, boundary condition, steady)
    "ns-sines": ({"u": "state", "v": "state"}, "periodic", False),
    "ns-gauss": ({"u": "state", "v": "state"}, "periodic", False),
    "ns-pwc": ({"u": "state", "v": "state"}, "periodic", False),
    "ns-shear-layer": ({"u": "state", "v": "state"}, "periodic", False),
    "ns-vortex-sheet": ({"u": "state", "v": "state"}, "periodic", False),
    "ns-tracer": ({"u": "state", "v": "state", "tracer": "state"}, "periodic", False),
    "ns-kolmogorov": ({"u": "state", "v": "state", "forcing": "forcing"}, "periodic", False),
    "wave-gauss": ({"u": "state", "c": "coefficient"}, "periodic", False),
    "wave-layer": ({"u": "state", "c": "coefficient"}, "periodic", False),
    "allen-cahn": ({"u": "state"}, "periodic", False),
    "poisson-gauss": ({"source": "source", "solution": "solution"}, "dirichlet", True),
}


def _build(name, path, trajectories=2, **options):
    opts = {**FAST, **({"eps": 10.0} if name == "allen-cahn" else {}), **options}  # ε resolved at 16²
    if name == "poisson-gauss":
        opts = {k: v for k, v in opts.items() if k not in ("snapshots", "t_end")}
    return _resolve(BUILDERS, name, "builder")(path, trajectories=trajectories, resolution=N, seed=0, **opts)


def _digest(path: Path) -> dict[str, str]:
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(path.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builder_writes_the_canonical_layout(name, tmp_path):
    variables, bc, steady = EXPECTED[name]
    s = FieldStore(_build(name, tmp_path / f"{name}.zarr"))
    assert s.variables == list(variables) and s.roles == variables and s.steady is steady
    assert s.n_trajectories == 2 and s.spatial_shape == (N, N)
    assert s.boundary_conditions == {"x": bc, "y": bc}
    assert s.attrs["generator"]["name"] == name and s.attrs["generator"]["seed"] == 0 and s.attrs["pde"]
    assert s.attrs["domain"] == {"x": [0.0, 1.0], "y": [0.0, 1.0]}
    if not steady:
        np.testing.assert_allclose(s.time, [0.0, 0.05, 0.1])
    for v in variables:
        assert np.isfinite(s.stats[v]["std"]) and s.stats[v]["std"] > 0
        assert (v in s.diff_stats) == (not s.is_static(v))
    a, b = s.trajectory(0), s.trajectory(1)
    assert not np.allclose(a[s.variables[0]], b[s.variables[0]])  # trajectories differ


def test_written_fields_satisfy_their_equations(tmp_path):
    ns = FieldStore(_build("ns-kolmogorov", tmp_path / "kf.zarr"))
    x = np.arange(N) / N
    k = np.fft.fftfreq(N, 1 / N) * 2 * math.pi
    for i in range(2):
        tr = ns.trajectory(i)
        np.testing.assert_allclose(tr["forcing"], 0.1 * np.sin(2 * math.pi * (x[:, None] + x[None, :])), atol=1e-7)
        div = np.fft.ifft2(1j * k[:, None] * np.fft.fft2(tr["u"]) + 1j * k[None, :] * np.fft.fft2(tr["v"])).real
        assert np.abs(div).max() < 1e-5 * np.abs(tr["u"]).max() * k.max()  # float32 round-off
    wave = FieldStore(_build("wave-layer", tmp_path / "w.zarr"))
    c = wave.read("c", 0)
    assert c.min() > 0 and np.allclose(c, c[:1, :])  # layered: c depends on y only
    p = FieldStore(_build("poisson-gauss", tmp_path / "p.zarr"))
    f, u = p.read("source", 1).astype(np.float64), p.read("solution", 1).astype(np.float64)
    assert np.all(u[0] == 0) and np.all(u[:, -1] == 0)
    np.testing.assert_allclose(-laplacian_5point(u)[1:-1, 1:-1], f[1:-1, 1:-1], atol=1e-4 * np.abs(f).max())
    ac = FieldStore(_build("allen-cahn", tmp_path / "ac.zarr", eps=10.0)).trajectory(0)["u"]  # interface 2.3 cells
    assert np.abs(ac).max() <= 1.0 + 1e-4 and np.abs(ac[0]).max() == pytest.approx(1.0)
    with pytest.warns(UserWarning, match="interface width"):
        _build("allen-cahn", tmp_path / "ac40.zarr", eps=40.0)


def test_interrupted_build_resumes_to_an_identical_store(tmp_path, monkeypatch):
    reference = _build("ns-tracer", tmp_path / "ref.zarr", trajectories=4)
    original = builders_2d._ns_trajectory

    def dies_at_two(i, **kw):
        if i == 2:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of a build
        return original(i, **kw)

    monkeypatch.setattr(builders_2d, "_ns_trajectory", dies_at_two)
    out = tmp_path / "run.zarr"
    with pytest.raises(KeyboardInterrupt):
        _build("ns-tracer", out, trajectories=4)
    assert not out.exists() and (tmp_path / ".run.zarr.partial" / "progress" / "1.json").exists()
    monkeypatch.setattr(builders_2d, "_ns_trajectory", original)
    _build("ns-tracer", out, trajectories=4)
    assert not (tmp_path / ".run.zarr.partial").exists()
    assert _digest(out) == _digest(reference)


def test_worker_processes_give_the_same_store(tmp_path):
    serial = _build("poisson-gauss", tmp_path / "a.zarr", trajectories=5)
    pooled = _build("poisson-gauss", tmp_path / "b.zarr", trajectories=5, workers=2)
    assert _digest(pooled) == _digest(serial)


def test_cli_build_and_bad_options(tmp_path, capsys):
    main(["build", "allen-cahn", "--out", str(tmp_path / "ac.zarr"), "--trajectories", "2", "--resolution", "16",
          "--option", "snapshots=3", "--option", "t_end=0.002", "--option", "workers=1", "--option", "eps=10"])
    assert "built allen-cahn" in capsys.readouterr().out
    assert FieldStore(tmp_path / "ac.zarr").attrs["generator"]["t_end"] == 0.002
    with pytest.raises(DataError, match="unknown option"):
        _build("ns-sines", tmp_path / "x.zarr", bogus=1)
    with pytest.raises(DataError, match="resolution"):
        builders_2d.build_wave_gauss(tmp_path / "y.zarr", trajectories=1, resolution=15)


def test_built_stores_feed_the_data_module(tmp_path):
    from sciformer.data.fields import FieldDataModule

    steady = FieldDataModule([str(_build("poisson-gauss", tmp_path / "p.zarr", trajectories=10))], batch_size=2)
    assert steady.spec["steady"] and steady.spec["inputs"] == ["source"] and steady.spec["outputs"] == ["solution"]
    assert next(iter(steady.train_dataloader()))["x"].shape == (2, 1, N, N)
    wave = FieldDataModule([str(_build("wave-gauss", tmp_path / "w.zarr", trajectories=10))], batch_size=2)
    assert wave.spec["inputs"] == ["u", "c"] and wave.spec["outputs"] == ["u"]


def test_tgv_3d_uses_the_shared_runner(tmp_path):
    """builders_3d runs through the same process-pool runner: serial and pooled builds are identical."""
    a = _resolve(BUILDERS, "tgv-3d", "builder")(tmp_path / "a.zarr", trajectories=2, resolution=8, seed=0,
                                                t_end=0.2, snapshots=2, workers=1)
    b = _resolve(BUILDERS, "tgv-3d", "builder")(tmp_path / "b.zarr", trajectories=2, resolution=8, seed=0,
                                                t_end=0.2, snapshots=2, workers=2)
    assert _digest(a) == _digest(b)
    s = FieldStore(a)
    assert s.variables == ["u", "v", "w"] and s.spatial_shape == (8, 8, 8)
