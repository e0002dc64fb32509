"""Field metrics against hand computations, float64 numpy and analytic fields; DDP-style state merging;
which metrics apply to a store; negative controls."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sciformer.data.store import open_store, write_store
from sciformer.errors import SciformerError
from sciformer.metrics import fields as F
from sciformer.metrics import physics as P
from sciformer.metrics import spectra as S

EPS = F.VRMSE_EPS


def t(a):
    return torch.tensor(a, dtype=torch.float64)


# ---- point-wise errors ------------------------------------------------------------------------------
def test_pointwise_hand_computed():
    y = t([1.0, 3.0]).view(1, 1, 2)  # [B, C, X]
    p = t([2.0, 2.0]).view(1, 1, 2)  # error (1, −1); mean(y²) = 5; var(y) = 1
    assert F.mse(p, y).item() == 1.0 and F.rmse(p, y).item() == 1.0 and F.mae(p, y).item() == 1.0
    assert F.linf(p, y).item() == 1.0
    assert F.nrmse(p, y).item() == pytest.approx(1 / math.sqrt(5))
    assert F.vrmse(p, y).item() == pytest.approx(math.sqrt(1 / (1 + EPS)))
    assert math.isnan(F.pearson(p, y).item())  # a constant prediction has no correlation
    assert F.pearson(t([0.0, 4.0]).view(1, 1, 2), y).item() == pytest.approx(1.0)
    assert F.pearson(t([3.0, 1.0]).view(1, 1, 2), y).item() == pytest.approx(-1.0)
    p2 = t([1.0, 7.0]).view(1, 1, 2)  # error (0, 4)
    assert F.linf(p2, y).item() == 4.0 and F.mae(p2, y).item() == 2.0 and F.rmse(p2, y).item() == pytest.approx(
        math.sqrt(8))


def test_pointwise_match_float64_numpy_per_step():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(3, 4, 2, 6, 5))  # [B, T, C, X, Y]
    p = y + 0.3 * rng.normal(size=y.shape)
    ax = (3, 4)
    e2 = ((p - y) ** 2).mean(ax)
    pc, yc = p - p.mean(ax, keepdims=True), y - y.mean(ax, keepdims=True)
    ref = {"mse": e2, "rmse": np.sqrt(e2), "mae": np.abs(p - y).mean(ax), "linf": np.abs(p - y).max(ax),
           "nrmse": np.sqrt(e2) / np.sqrt((y ** 2).mean(ax)), "vrmse": np.sqrt(e2 / (y.var(ax) + EPS)),
           "pearson": (pc * yc).mean(ax) / np.sqrt((pc ** 2).mean(ax) * (yc ** 2).mean(ax))}
    for name, want in ref.items():
        got = getattr(F, name)(torch.from_numpy(p), torch.from_numpy(y), spatial_dims=2)
        assert got.shape == (3, 4, 2)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, err_msg=name)


def test_rollout_step_metrics_use_the_same_definitions():
    from sciformer.rollout import step_metrics

    rng = np.random.default_rng(1)
    y = rng.normal(size=(2, 3, 2, 8, 8)).astype(np.float32)
    p = (y + 0.1 * rng.normal(size=y.shape)).astype(np.float32)
    p[1, 2] = np.nan  # a blown-up step stays NaN
    m = step_metrics(p, y)
    y64, p64 = torch.from_numpy(y.astype(np.float64)), torch.from_numpy(p.astype(np.float64))
    for name, fn in (("vrmse", F.vrmse), ("nrmse", F.nrmse), ("correlation", F.pearson)):
        assert isinstance(m[name], np.ndarray) and m[name].dtype == np.float64
        np.testing.assert_allclose(m[name], fn(p64, y64, 2).numpy(), rtol=1e-12)
    assert np.isnan(m["vrmse"][1, 2]).all() and np.isfinite(m["vrmse"][:, :2]).all()


def test_boundary_rmse_hand_computed():
    y = torch.zeros(1, 1, 4, 3)
    p = torch.zeros(1, 1, 4, 3)
    p[..., 1:3, 1] = 5.0  # interior error only
    assert F.boundary_rmse(p, y, [0, 1]).item() == 0.0
    p = torch.zeros(1, 1, 4, 3)
    p[..., [0, 3], :] = 1.0  # error 1 on the 6 points of the x faces
    assert F.boundary_rmse(p, y, [0]).item() == pytest.approx(1.0)
    # x and y faces: 6 + 4 points (corners once); error on 6 of them
    assert F.boundary_rmse(p, y, [0, 1]).item() == pytest.approx(math.sqrt(6 / 10))
    assert F.boundary_rmse(p, y, [1]).item() == pytest.approx(math.sqrt(4 / 8))  # y faces: 8 points, 4 in x rows
    assert F.boundary_mask((4, 3), [0, 1]).sum().item() == 10


def test_group_relative_error_percent_median_and_mean():
    # four samples of a constant field y = 1, 2, 4, 8 predicted as y + 1: relative L1 = 1/y
    y = t([1.0, 2.0, 4.0, 8.0]).view(4, 1, 1, 1).expand(4, 2, 3, 3).clone()
    p = y + 1.0
    mask = torch.ones(4, 2)
    mask[0, 1] = 0.0  # sample 0's channel 1 is padded: its group {1} is NaN and ignored
    m = F.GroupRelativeError(groups=[[0], [1], [0, 1]])
    m.update(p, y, mask)
    out = m.compute()
    # group {0}: 100, 50, 25, 12.5 → median (50 + 25)/2 = 37.5 (numpy's median; torch.nanmedian would say 25)
    torch.testing.assert_close(out["median"], t([37.5, 25.0, 37.5]).float())
    torch.testing.assert_close(out["mean"], t([187.5 / 4, 87.5 / 3, 187.5 / 4]).float())
    assert out["mean_over_median"].item() == pytest.approx((37.5 + 25 + 37.5) / 3)
    l2 = F.GroupRelativeError(groups=[[0, 1]], p=2, percent=False)
    p2 = y.clone()
    p2[:, 0] += y[:, 0]  # channel 0 doubled: (Σe²/Σy²)^½ = (n y² / 2n y²)^½
    l2.update(p2, y)
    assert l2.compute()["median"].item() == pytest.approx(math.sqrt(0.5))  # one group: torchmetrics squeezes


def _halves_equal_whole(make, *args):
    whole, a, b = make(), make(), make()
    whole.update(*args)
    a.update(*[x[:2] for x in args])
    b.update(*[x[2:] for x in args])
    a.merge_state(b)
    return whole.compute(), a.compute()


@pytest.mark.parametrize("make", [
    lambda: F.RMSE(), lambda: F.NRMSE(), lambda: F.VRMSE(), lambda: F.MAE(), lambda: F.MSE(), lambda: F.LInf(),
    lambda: F.PearsonCorrelation(), lambda: F.BoundaryRMSE([0]), lambda: S.EnergySpectrumError(),
    lambda: S.SpectralBandError(kind="nmse"), lambda: F.GroupRelativeError(groups=[[0], [1]])])
def test_metric_on_halves_merged_equals_metric_on_all(make):
    """What DDP does: each rank updates on its shard, states are reduced (sum/max/cat), then compute."""
    g = torch.Generator().manual_seed(0)
    y = torch.randn(5, 2, 8, 8, generator=g)
    p = y + 0.2 * torch.randn(5, 2, 8, 8, generator=g)
    whole, merged = _halves_equal_whole(make, p, y)
    if isinstance(whole, dict):
        for k in whole:
            torch.testing.assert_close(merged[k], whole[k])
    else:
        torch.testing.assert_close(merged, whole)
    # the whole-data value is the mean over samples of the functional form (or the max for L∞)
    ref = {F.RMSE: F.rmse, F.NRMSE: F.nrmse, F.VRMSE: F.vrmse, F.MAE: F.mae, F.MSE: F.mse, F.PearsonCorrelation: F.pearson,
           S.EnergySpectrumError: S.energy_spectrum_error}.get(type(make()))
    if ref is not None:
        torch.testing.assert_close(whole, ref(p.double(), y.double()).mean(0))


def test_group_relative_error_distributed_gather_is_concatenation():
    """torchmetrics' sync gathers ``cat`` states from every rank: emulate it by concatenating the states."""
    g = torch.Generator().manual_seed(1)
    y = torch.randn(6, 1, 4, 4, generator=g)
    p = y + torch.randn(6, 1, 4, 4, generator=g)
    ranks = [F.GroupRelativeError(), F.GroupRelativeError()]
    ranks[0].update(p[::2], y[::2])
    ranks[1].update(p[1::2], y[1::2])
    gathered = F.GroupRelativeError()
    gathered.update(p[:0], y[:0])
    gathered.errors = torch.cat([torch.cat(r.errors) for r in ranks])  # what dim_zero_cat makes of all ranks
    want = np.median(100 * (np.abs((p - y).numpy()).sum((1, 2, 3)) / np.abs(y.numpy()).sum((1, 2, 3))))
    assert gathered.compute()["median"].item() == pytest.approx(want, rel=1e-5)


def test_sample_mean_skips_blown_up_samples_and_rejects_new_layouts():
    y = torch.ones(3, 1, 4)
    p = torch.stack([torch.full((1, 4), 2.0), torch.full((1, 4), float("nan")), torch.full((1, 4), 4.0)])
    m = F.RMSE()
    m.update(p, y)
    assert m.compute().item() == 2.0  # (1 + 3) / 2: the NaN sample is not counted
    with pytest.raises(ValueError, match="per-sample values of shape"):
        m.update(torch.ones(2, 3, 4), torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="differ in shape"):
        F.rmse(torch.ones(1, 1, 4), torch.ones(1, 1, 5))
    linf = F.LInf()
    linf.update(p, y)
    assert linf.compute().item() == 3.0


# ---- spectra -----------------------------------------------------------------------------------------
def _grid(n, d=2):
    x = torch.arange(n, dtype=torch.float64) / n
    return torch.meshgrid(*([x] * d), indexing="ij")


def test_energy_spectrum_single_modes_land_in_their_shell():
    X, Y = _grid(16)
    f = torch.sin(2 * math.pi * 3 * X) + 0.5 * torch.cos(2 * math.pi * (4 * X + 3 * Y))  # |κ| = 3 and 5
    k, e = S.energy_spectrum(f[None, None], 2)
    assert k.tolist() == list(range(9)) and e.shape == (1, 1, 9)
    want = torch.zeros(9, dtype=torch.float64)
    want[3], want[5] = 0.25, 0.0625  # ½·mean(f_k²) = ½·½ and ½·(¼·½)
    torch.testing.assert_close(e[0, 0], want, atol=1e-14, rtol=0)
    torch.testing.assert_close(e.sum(), 0.5 * (f ** 2).mean())  # Parseval
    torch.testing.assert_close(S.energy_spectrum(f, 2)[1], e[0, 0])  # an unbatched field works too
    with pytest.raises(ValueError, match="does not fit"):
        S.energy_spectrum(f, 3)
    X3, Y3, Z3 = _grid(8, 3)
    k3, e3 = S.energy_spectrum(torch.cos(2 * math.pi * (X3 + Y3 + Z3))[None], 3)  # |κ| = √3 → shell 2
    assert e3[0].argmax().item() == 2 and e3[0, 2].item() == pytest.approx(0.25)


def test_spectrum_error_hand_computed():
    assert S.spectrum_error(t([1.0, 2.0, 3.0]), t([1.0, 1.0, 1.0])).item() == pytest.approx(1.0)  # (0+1+2)/3
    X, Y = _grid(16)
    f = (torch.sin(2 * math.pi * 2 * X) + torch.cos(2 * math.pi * 5 * Y))[None, None]
    assert S.energy_spectrum_error(1.5 * f, f).item() == pytest.approx(1.25)  # |1.5² − 1|
    assert S.energy_spectrum_error(f.roll(3, -1), f).item() == pytest.approx(0.0, abs=1e-12)  # phase-blind
    # while the point-wise error sees the shift: the |κ|=5 mode moves by 3/16 of the domain
    assert F.rmse(f.roll(3, -1), f).item() == pytest.approx(2 * math.sin(math.pi / 16) / math.sqrt(2))


def test_band_errors_parseval_and_single_mode():
    g = torch.Generator().manual_seed(2)
    y = torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64)
    p = y + torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64)
    for bands in (S.PDEBENCH_BANDS, S.log_bands((32, 32))):
        b = S.spectral_band_error(p, y, bands)
        assert b.shape == (2, 3, 3)
        torch.testing.assert_close((b ** 2).sum(-1), F.mse(p, y))  # bands cover every wavenumber
    X, Y = _grid(32)
    mode = torch.cos(2 * math.pi * (4 * X + 3 * Y))[None, None]  # |κ| = 5: PDEBench's mid band [4, 12)
    truth = mode + torch.cos(2 * math.pi * 13 * X)[None, None]  # plus a high-band mode
    b = S.spectral_band_error(truth + 0.1 * mode, truth)
    torch.testing.assert_close(b[0, 0], t([0.0, 0.1 * math.sqrt(0.5), 0.0]), atol=1e-12, rtol=0)
    nmse = S.spectral_band_error(truth + 0.1 * mode, truth, kind="nmse")
    assert nmse[0, 0, 1].item() == pytest.approx(0.005 / (0.5 + S.BAND_EPS), rel=1e-12)  # ½·0.01 / ½
    assert nmse[0, 0, 2].item() == pytest.approx(0.0, abs=1e-20)
    with pytest.raises(ValueError, match="increasing"):
        S.spectral_band_error(p, y, (4.0, 1.0))


def test_log_bands_match_the_wells_default_on_square_grids():
    n, d = 64, 2
    well = np.logspace(np.log10(2 * np.pi / n), np.log10(np.pi * np.sqrt(d)), 4) * n / (2 * np.pi)  # ω → κ
    edges = S.log_bands((n, n))
    np.testing.assert_allclose(edges[1:3], well[1:3])
    assert edges[0] == 0.0 and edges[-1] == math.inf


# ---- conservation and divergence --------------------------------------------------------------------
def test_conservation_drift_zero_for_a_conserved_field_and_hand_value_otherwise():
    g = torch.Generator().manual_seed(3)
    f0 = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64) + 0.5  # positive density
    advected = torch.stack([f0.roll((s, 2 * s), (-2, -1)) for s in range(5)], 1)  # [B, T, C, X, Y]
    drift = P.conservation_drift(advected, 2)
    assert drift.shape == (2, 5, 1) and drift.abs().max().item() < 1e-14
    decay = torch.stack([f0 * math.exp(-0.5 * s) for s in range(5)], 1)
    torch.testing.assert_close(P.conservation_drift(decay, 2)[0, :, 0], t([math.exp(-0.5 * s) - 1 for s in range(5)]))
    m = P.ConservationDrift(spatial_dims=2)
    m.update(decay)
    torch.testing.assert_close(m.compute()[:, 0], t([1 - math.exp(-0.5 * s) for s in range(5)]))
    # a zero-mean field is normalised by ∫|f(t₀)|: adding 0.1·∫|f₀| of mass gives drift 0.1
    w = f0 - f0.mean((-2, -1), keepdim=True)
    shifted = torch.stack([w, w + 0.1 * w.abs().mean((-2, -1), keepdim=True)], 1)
    torch.testing.assert_close(P.conservation_drift(shifted, 2)[:, 1], torch.full((2, 1), 0.1, dtype=torch.float64))
    assert P.spatial_integral(torch.ones(1, 1, 4, 5), cell_volume=0.5).item() == 10.0
    assert P.integral_error(f0 + 0.25, f0).flatten().tolist() == pytest.approx([0.25, 0.25])


def test_divergence_spectral_on_periodic_grid_matches_analytic():
    n = 16
    X, Y = _grid(n)
    vel = torch.stack([torch.sin(2 * math.pi * X), torch.sin(4 * math.pi * Y)])[None]  # [1, 2, X, Y]
    want = 2 * math.pi * torch.cos(2 * math.pi * X) + 4 * math.pi * torch.cos(4 * math.pi * Y)
    torch.testing.assert_close(P.divergence(vel, [1 / n, 1 / n], [True, True])[0], want, atol=1e-11, rtol=0)
    # a solenoidal field (stream function sin(2πx) sin(2πy)) has zero divergence
    sol = torch.stack([torch.sin(2 * math.pi * X) * torch.cos(2 * math.pi * Y),
                       -torch.cos(2 * math.pi * X) * torch.sin(2 * math.pi * Y)])[None]
    assert P.divergence_rms(sol, [1 / n, 1 / n], [True, True]).item() < 1e-12
    # 3-D on [0, 2π)³: u = (sin x, sin y, sin z), ∇·u = cos x + cos y + cos z
    m = 8
    x = torch.arange(m, dtype=torch.float64) * 2 * math.pi / m
    X3, Y3, Z3 = torch.meshgrid(x, x, x, indexing="ij")
    div3 = P.divergence(torch.stack([X3.sin(), Y3.sin(), Z3.sin()])[None], [2 * math.pi / m] * 3, [True] * 3)
    torch.testing.assert_close(div3[0], X3.cos() + Y3.cos() + Z3.cos(), atol=1e-12, rtol=0)


def test_divergence_finite_differences_exact_for_quadratics_second_order_otherwise():
    x = torch.linspace(0, 1, 7, dtype=torch.float64)
    X, Y = torch.meshgrid(x, x, indexing="ij")
    vel = torch.stack([X ** 2, X * Y])[None]  # ∇·u = 2x + x = 3x, exact for second-order differences
    h = 1 / 6
    torch.testing.assert_close(P.divergence(vel, [h, h], [False, False])[0], 3 * X, atol=1e-12, rtol=0)
    # the spectral derivative of this non-periodic field is badly wrong: why the plan uses differences here
    assert (P.divergence(vel, [h, h], [True, True])[0] - 3 * X).abs().max() > 0.5

    def err(n):
        x = torch.linspace(0, 1, n, dtype=torch.float64)
        X, Y = torch.meshgrid(x, x, indexing="ij")
        v = torch.stack([torch.sin(3 * X), torch.cos(2 * Y)])[None]
        want = 3 * torch.cos(3 * X) - 2 * torch.sin(2 * Y)
        return (P.divergence(v, [1 / (n - 1)] * 2, [False, False])[0] - want).abs().max().item()

    assert 3.5 < err(17) / err(33) < 4.5  # second order, edges included
    m = P.DivergenceRMS([h, h], [False, False])
    m.update(torch.cat([vel, torch.zeros_like(vel)]))
    assert m.compute().item() == pytest.approx(0.5 * (3 * X).square().mean().sqrt().item())
    with pytest.raises(ValueError, match="divergence needs velocity"):
        P.divergence(vel[:, :1], [h, h], [False, False])


# ---- which metrics apply -----------------------------------------------------------------------------
def _meta(variables, bcs, steady=False, coords=None, roles=None):
    axes = list(bcs)
    coords = coords or {a: np.arange(8) / 8 for a in axes}
    return {"variables": variables, "roles": roles or {v: "state" for v in variables}, "axes": axes,
            "boundary_conditions": bcs, "coords": coords, "steady": steady}


def test_plan_periodic_velocity_store_from_a_real_store(tmp_path):
    rng = np.random.default_rng(0)
    data = {v: rng.normal(size=(2, 3, 8, 8)).astype(np.float32) for v in ("u", "v", "rho")}
    data["f"] = rng.normal(size=(2, 8, 8)).astype(np.float32)
    roles = {"u": "state", "v": "state", "rho": "state", "f": "forcing"}
    path = write_store(tmp_path / "ns.zarr", data, {v: {"role": r, "units": "1"} for v, r in roles.items()},
                       np.linspace(0, 1, 3), {"x": np.arange(8) / 8, "y": np.arange(8) / 8},
                       {"boundary_conditions": {"x": "periodic", "y": "periodic"}})
    plan = P.plan_metrics(open_store(path))
    assert plan.applies["nrmse"]["variables"] == ["u", "v", "rho"]  # the forcing is not scored
    div = plan.require("divergence")
    assert div["velocity"] == ["u", "v"] and div["periodic"] == [True, True]
    assert div["spacing"] == pytest.approx([1 / 8, 1 / 8]) and set(div["method"].values()) == {"spectral"}
    assert plan.applies["energy_drift"] == {"velocity": ["u", "v"]} and "conservation" in plan.applies
    assert "periodic" in plan.skipped["boundary_rmse"] and "energy_spectrum" not in plan.notes
    with pytest.raises(SciformerError, match="does not apply: every axis"):
        plan.require("boundary_rmse")
    assert "divergence: applies" in plan.describe()


def test_plan_without_velocity_says_why_divergence_does_not_apply():
    plan = P.plan_metrics(_meta(["rho", "u"], {"x": "dirichlet", "y": ["neumann", "neumann"]}))
    with pytest.raises(SciformerError, match=r"no velocity.*\(only \['u'\] found\)"):
        plan.require("divergence")
    assert "kinetic energy" in plan.skipped["energy_drift"]
    assert plan.require("boundary_rmse")["axes"] == [0, 1]
    assert "not periodic" in plan.notes["spectral_bands"]
    with pytest.raises(SciformerError, match="unknown metric"):
        plan.require("bleu")


def test_plan_mixed_steady_unspecified_and_nonuniform():
    plan = P.plan_metrics(_meta(["u", "v"], {"x": "periodic", "y": "wall"}))
    assert plan.applies["divergence"]["method"] == {"x": "spectral", "y": "finite differences"}
    assert plan.applies["boundary_rmse"]["axis_names"] == ["y"]
    steady = P.plan_metrics(_meta(["u", "v"], {"x": "periodic", "y": "periodic"}, steady=True,
                                  roles={"u": "solution", "v": "solution"}))
    assert "steady" in steady.skipped["conservation"] and "divergence" in steady.applies
    unknown = P.plan_metrics(_meta(["u", "v"], {"x": "unspecified", "y": "unspecified"}))
    assert "unspecified" in unknown.skipped["boundary_rmse"] and "unspecified" in unknown.notes["divergence"]
    nonuni = P.plan_metrics(_meta(["u", "v"], {"x": "open", "y": "open"},
                                  coords={"x": np.array([0, 1, 3, 4.0]), "y": np.arange(4.0)}))
    assert "not uniformly spaced" in nonuni.skipped["divergence"]
    three = P.plan_metrics(_meta(["vx", "vy", "vz"], {"x": "periodic", "y": "periodic", "z": "periodic"}))
    assert three.applies["divergence"]["velocity"] == ["vx", "vy", "vz"]
    none = P.plan_metrics(_meta(["k"], {"x": "periodic"}, roles={"k": "coefficient"}))
    assert not none.applies and "no predicted variables" in none.skipped["nrmse"]
    with pytest.raises(SciformerError, match="not in the store"):
        P.plan_metrics(_meta(["u"], {"x": "periodic"}), variables=["p"])
