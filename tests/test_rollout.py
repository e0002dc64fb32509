"""Rollout engine: AR / direct / mixed against oracle models whose compositions are known in closed form,
static re-insertion, blow-up guard, bad input, the `sciformer rollout` command's outputs, pushforward."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from sciformer import models
from sciformer.cli import main
from sciformer.data.store import open_store, write_store
from sciformer.errors import CheckpointError, DataError, SciformerError
from sciformer.models.spec import FamilySpec
from sciformer.rollout import (
    BlowupGuard,
    Plan,
    RolloutEngine,
    energy_spectrum,
    feedback_pairs,
    lead_times,
    pushforward,
    roll,
    summarize,
)

# non-uniform snapshot times: lead times must follow DECISIONS' (time[j] − time[i]) / span
TIME = np.array([0.0, 0.1, 0.3, 0.6, 1.0, 1.5, 2.0])
SPAN = TIME[-1] - TIME[0]
LAM = 0.7  # decay rate of the synthetic store


def _store(tmp_path, n=5, forcing=False, grow=None, name="s.zarr", independent_v=False):
    """u(t) = u0·exp(−λt) (+ f·t with a static forcing f); v = 2u (or its own initial field). 8×6 grid."""
    rng = np.random.default_rng(0)
    x, y = np.linspace(0, 1, 8, endpoint=False), np.linspace(0, 1, 6, endpoint=False)
    u0 = 1.0 + rng.random((n, 8, 6))
    u = u0[:, None] * np.exp(-LAM * TIME)[None, :, None, None]
    v = (0.5 + rng.random((n, 8, 6)) ** 2)[:, None] * np.exp(-LAM * TIME)[None, :, None, None] if independent_v else 2 * u
    data = {"u": u, "v": v}
    variables = {"u": {"role": "state", "units": "m/s"}, "v": {"role": "state", "units": "m/s"}}
    if forcing:
        f = rng.normal(size=(n, 8, 6))
        data = {"u": u0[:, None] + f[:, None] * TIME[None, :, None, None], "f": f}
        variables = {"u": {"role": "state", "units": "m/s"}, "f": {"role": "forcing", "units": "m/s2"}}
    if grow is not None:  # a static coefficient c that selects trajectories for the diverging model
        data["c"] = np.broadcast_to(np.array(grow, float)[:, None, None], (n, 8, 6)).copy()
        variables["c"] = {"role": "coefficient", "units": "1"}
    path = write_store(tmp_path / name, data, variables, TIME, {"x": x, "y": y},
                       {"pde": "decay", "boundary_conditions": {"x": "periodic", "y": "periodic"}})
    return open_store(path)


def _spec(store, predict_static=False, sampler="all2all"):
    states = [v for v in store.variables if not store.is_static(v)]
    static = [v for v in store.variables if store.is_static(v)]
    return {"layout": "fields", "inputs": states + static, "outputs": states + (static if predict_static else []),
            "in_channels": len(states + static), "out_channels": len(states) + (len(static) if predict_static else 0),
            "stats": dict(store.stats), "roles": dict(store.roles), "steady": False, "sampler": sampler,
            "time_span": SPAN}


class Physical(nn.Module):
    """Wraps a physical-units map ``f(fields [B, C_in, *S], dt) -> [B, C_out, *S]`` as a normalised model."""

    def __init__(self, spec, fn):
        super().__init__()
        self.fn, self.spec = fn, spec
        st = spec["stats"]
        self.register_buffer("mi", torch.tensor([st[v]["mean"] for v in spec["inputs"]]).view(1, -1, 1, 1))
        self.register_buffer("si", torch.tensor([st[v]["std"] for v in spec["inputs"]]).view(1, -1, 1, 1))
        self.register_buffer("mo", torch.tensor([st[v]["mean"] for v in spec["outputs"]]).view(1, -1, 1, 1))
        self.register_buffer("so", torch.tensor([st[v]["std"] for v in spec["outputs"]]).view(1, -1, 1, 1))
        self.calls = 0

    def forward(self, x, t):
        self.calls += 1
        phys = x.double() * self.si + self.mi
        out = self.fn(phys, t.double() * SPAN, self)
        return ((out - self.mo) / self.so).float()


def _decay(eps):
    """Exact decay times (1 + eps): AR composes the factor, direct applies it once."""
    return lambda x, dt, m: x[:, :2] * (torch.exp(-LAM * dt) * (1 + eps)).view(-1, 1, 1, 1)


def _engine(store, model, spec=None, **kw):
    kw.setdefault("device", "cpu")
    return RolloutEngine(model, spec or _spec(store), store, **kw)


# ---- plan and lead times ---------------------------------------------------------------------------
def test_plan_anchors_and_lead_times():
    ar, direct, mixed = Plan(6, "ar"), Plan(6, "direct"), Plan(6, "mixed", jump=2)
    assert [ar.anchor(s) for s in range(1, 7)] == [0, 1, 2, 3, 4, 5]
    assert [direct.anchor(s) for s in range(1, 7)] == [0] * 6
    assert [mixed.anchor(s) for s in range(1, 7)] == [0, 0, 2, 2, 4, 4]
    np.testing.assert_allclose(lead_times(ar, TIME), np.diff(TIME) / SPAN)
    np.testing.assert_allclose(lead_times(direct, TIME), (TIME[1:] - TIME[0]) / SPAN)
    np.testing.assert_allclose(lead_times(mixed, TIME), (TIME[1:] - TIME[[0, 0, 2, 2, 4, 4]]) / SPAN)
    # beyond the last snapshot time continues with the last spacing
    np.testing.assert_allclose(lead_times(Plan(8, "direct"), TIME)[-2:], (np.array([2.5, 3.0]) - 0) / SPAN)
    with pytest.raises(SciformerError, match="mode"):
        Plan(3, "chained")


# ---- AR vs direct vs mixed against the closed form ---------------------------------------------------
@pytest.mark.parametrize("mode,jump", [("ar", 1), ("direct", 1), ("mixed", 2), ("mixed", 4)])
def test_modes_match_closed_form(tmp_path, mode, jump):
    store = _store(tmp_path)
    eps = 0.05
    model = Physical(_spec(store), _decay(eps))
    eng = _engine(store, model, mode=mode, jump=jump)
    res = eng.run([3, 4])
    steps = len(TIME) - 1
    assert res.pred.shape == (2, steps, 2, 8, 6) and res.truth.shape == res.pred.shape
    k = {"ar": 1, "direct": steps, "mixed": jump}[mode]
    applications = np.array([(s - 1) // k + 1 for s in range(1, steps + 1)])
    expected = res.truth * (1 + eps) ** applications[None, :, None, None, None]
    np.testing.assert_allclose(res.pred, expected, rtol=2e-5)
    # the number of model calls is one per step (the batch of 2 runs together)
    assert model.calls == steps
    assert (res.blowup_step == 0).all()


def test_exact_model_reproduces_truth_in_every_mode(tmp_path):
    store = _store(tmp_path)
    outs = {}
    for mode in ("ar", "direct", "mixed"):
        res = _engine(store, Physical(_spec(store), _decay(0.0)), mode=mode, jump=3).run([0, 1, 2])
        np.testing.assert_allclose(res.pred, res.truth, rtol=1e-5)
        outs[mode] = res.pred
    np.testing.assert_allclose(res.initial[:, 0], np.stack([store.snapshot(i, 0)["u"] for i in (0, 1, 2)]), rtol=1e-6)


def test_cpu_engine_keeps_freed_memory(tmp_path, monkeypatch):
    """On CPU the engine makes the process keep freed memory (each step's activations would otherwise be
    page-faulted anew: 1.4× slower for scOT-T at 16×128²); the allocator setting itself: tests/kernels."""
    import sciformer.rollout.engine as engine

    calls = []
    monkeypatch.setattr(engine, "keep_freed_memory", lambda: calls.append(True) or True)
    store = _store(tmp_path)
    _engine(store, Physical(_spec(store), _decay(0.0)))
    assert calls == [True]
    _engine(store, Physical(_spec(store), _decay(0.0)), device="meta")
    assert calls == [True]  # not for other devices


def test_ar_with_stride_and_history(tmp_path):
    """History model: u_next = u_now + (u_now − u_prev), exact for linear-in-time data; checks frame order."""
    x = np.linspace(0, 1, 8, endpoint=False)
    rng = np.random.default_rng(1)
    a, b = rng.random((3, 8, 6)), rng.random((3, 8, 6))
    time = np.arange(9.0)
    u = a[:, None] + b[:, None] * time[None, :, None, None]
    path = write_store(tmp_path / "lin.zarr", {"u": u}, {"u": {"role": "state"}}, time, {"x": x, "y": x[:6]})
    store = open_store(path)
    spec = _spec(store) | {"history": 2, "in_channels": 2}
    st = spec["stats"]["u"]

    def extrapolate(x, t):
        prev, now = x[:, :1], x[:, 1:2]  # oldest first
        return 2 * now - prev

    eng = RolloutEngine(extrapolate, spec, store, mode="ar", stride=2, start=2, device="cpu")
    res = eng.run([0, 1, 2])
    assert res.pred.shape[1] == 3  # snapshots 4, 6, 8 from 2 (history: 0, 2)
    np.testing.assert_allclose(res.pred, res.truth, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res.truth[:, :, 0], u[:, [4, 6, 8]], rtol=1e-6)
    assert st["std"] > 0
    with pytest.raises(DataError, match="start"):
        RolloutEngine(extrapolate, spec, store, stride=2, start=0, device="cpu")


# ---- static fields --------------------------------------------------------------------------------
@pytest.mark.parametrize("predict_static", [False, True])
def test_static_fields_reinserted_from_data(tmp_path, predict_static):
    """u_next = u + f·dt is exact; the model also returns a corrupted f (predict_static) that must be ignored."""
    store = _store(tmp_path, forcing=True)
    spec = _spec(store, predict_static=predict_static)

    def step(x, dt, m):
        u, f = x[:, :1], x[:, 1:2]
        out = [u + f * dt.view(-1, 1, 1, 1)]
        if predict_static:
            out.append(f * 0 + 1e3)  # garbage static prediction
        return torch.cat(out, 1)

    res = _engine(store, Physical(spec, step), spec, mode="ar").run([0, 4])
    np.testing.assert_allclose(res.pred, res.truth, rtol=1e-4, atol=1e-4)
    assert res.variables == ["u"]


# ---- blow-up guard --------------------------------------------------------------------------------
def test_blowup_guard_stops_only_the_diverging_trajectory(tmp_path):
    """u constant in time (λ=0 store variant); the model multiplies by 1.5 where c = 1: data range of u0 in
    [lo, hi]; with factor f the trajectory stops at the first step with max|1.5^s·u0 − mid| > f·(hi − lo)/2."""
    store = _store(tmp_path, grow=[0, 1, 0, 1, 0])
    spec = _spec(store)

    def model(x, dt, m):
        c = x[:, 2:3]
        return x[:, :2] * torch.exp(-LAM * dt).view(-1, 1, 1, 1) * torch.where(c > 0.5, 1.5, 1.0)

    res = _engine(store, Physical(spec, model), spec, blowup_factor=2.0).run([0, 1, 2, 3])
    truth = np.stack([store.trajectory(i)["u"] for i in range(4)])  # [4, T, X, Y]
    for k in range(4):
        if k in (0, 2):
            assert res.blowup_step[k] == 0
            np.testing.assert_allclose(res.pred[k], res.truth[k], rtol=1e-5)
            continue
        # expected stop: per variable (u and v = 2u), range over all truth of the trajectory
        stop = 0
        for s in range(1, len(TIME)):
            for scale in (1.0, 2.0):
                vals = scale * truth[k]
                lo, hi = vals.min(), vals.max()
                pred = scale * truth[k, s] * 1.5 ** s
                if np.abs(pred - (lo + hi) / 2).max() > 2.0 * (hi - lo) / 2:
                    stop = stop or s
        assert stop > 1 and res.blowup_step[k] == stop
        assert np.isnan(res.pred[k, stop - 1:]).all() and np.isfinite(res.pred[k, : stop - 1]).all()


def test_blowup_guard_non_finite_and_model_sees_only_active_rows(tmp_path):
    store = _store(tmp_path, grow=[0, 1, 0, 0, 0])
    spec = _spec(store)
    sizes = []

    def model(x, dt, m):
        sizes.append(x.shape[0])
        out = x[:, :2] * torch.exp(-LAM * dt).view(-1, 1, 1, 1)
        if m.calls == 3:  # the third step: NaN/inf in the trajectories with c = 1
            bad = (x[:, 2:3] > 0.5).expand_as(out)
            out = torch.where(bad, torch.full_like(out, float("inf")), out)
        return out

    res = _engine(store, Physical(spec, model), spec, blowup_factor=float("inf")).run([0, 1, 2])
    assert res.blowup_step.tolist() == [0, 3, 0]
    assert sizes == [3, 3, 3, 2, 2, 2]
    np.testing.assert_allclose(res.pred[[0, 2]], res.truth[[0, 2]], rtol=1e-5)


def test_blowup_guard_unit():
    g = BlowupGuard.from_range(torch.tensor([[0.0, -1.0]]), torch.tensor([[2.0, 1.0]]), factor=3.0)
    ok = torch.zeros(1, 2, 4)
    assert not g(ok).item()
    assert g(ok + torch.tensor([0.0, 3.5]).view(1, 2, 1)).item()  # |3.5 − 0| > 3·1
    assert not g(ok + torch.tensor([3.9, 0.0]).view(1, 2, 1)).item()  # |3.9 − 1| ≤ 3·1
    assert g(torch.full((1, 2, 4), float("nan"))).item()


# ---- bad input --------------------------------------------------------------------------------------
def test_variables_mismatch_points_to_finetune(tmp_path):
    store = _store(tmp_path, forcing=True)
    spec = _spec(_store(tmp_path, name="other.zarr"))  # trained on u, v
    with pytest.raises(CheckpointError, match="sciformer finetune"):
        RolloutEngine(lambda x, t: x, spec, store, device="cpu")


def test_pad_missing_holds_absent_variables_at_zero(tmp_path):
    store = _store(tmp_path)
    spec = _spec(store)
    spec = spec | {"inputs": ["rho", "u", "v"], "outputs": ["rho", "u", "v"], "roles": {**spec["roles"], "rho": "state"},
                   "stats": {**spec["stats"], "rho": {"mean": 1.0, "std": 1.0}}}
    seen = []

    def model(x, t):
        seen.append(x[:, 0].abs().max().item())
        return x + 1.0  # would move rho if it were fed back

    with pytest.raises(CheckpointError, match="pad_missing"):
        RolloutEngine(model, spec, store, device="cpu")
    res = RolloutEngine(model, spec, store, device="cpu", pad_missing=True, blowup_factor=float("inf")).run([0], steps=3)
    assert seen == [0.0, 0.0, 0.0] and res.variables == ["u", "v"]


def test_steady_store_and_more_steps_than_truth(tmp_path):
    x = np.linspace(0, 1, 4)
    steady = open_store(write_store(tmp_path / "st.zarr", {"a": np.ones((2, 4, 4)), "sol": np.ones((2, 4, 4))},
                                    {"a": {"role": "coefficient"}, "sol": {"role": "solution"}}, None,
                                    {"x": x, "y": x}))
    with pytest.raises(DataError, match="no time axis"):
        RolloutEngine(lambda x, t: x, {"inputs": ["a"], "outputs": ["sol"]}, steady, device="cpu")
    store = _store(tmp_path)
    res = _engine(store, Physical(_spec(store), _decay(0.0))).run([0], steps=9)
    assert res.pred.shape[1] == 9 and res.truth.shape[1] == 6
    np.testing.assert_allclose(res.pred[:, :6], res.truth, rtol=1e-5)
    # beyond the truth the exact decay continues with the last spacing (dt = 0.5)
    np.testing.assert_allclose(res.pred[:, 8], res.truth[:, 5] * np.exp(-LAM * 1.5), rtol=1e-5)


def test_non_predicted_input_cannot_be_chained(tmp_path):
    store = _store(tmp_path)
    spec = _spec(store) | {"outputs": ["u"]}
    eng = RolloutEngine(lambda x, t: x[:, :1], spec, store, mode="ar", device="cpu")
    with pytest.raises(CheckpointError, match="direct"):
        eng.run([0])
    res = RolloutEngine(lambda x, t: x[:, :1], spec, store, mode="direct", device="cpu").run([0])
    assert res.variables == ["u"]


# ---- pushforward ------------------------------------------------------------------------------------
def test_pushforward_composes_and_limits_gradient():
    lin = nn.Conv2d(3, 2, 1, bias=False)  # inputs: u, v, static f; outputs: u, v
    torch.nn.init.normal_(lin.weight)
    calls = []

    def model(x, t):
        calls.append(t)
        return lin(x) * (1 + t.view(-1, 1, 1, 1))

    fb = feedback_pairs(["u", "v", "f"], ["u", "v"], {"f": "forcing"})
    assert fb == [(0, 0), (1, 1)]
    x = torch.randn(2, 3, 4, 4)
    t = torch.tensor([0.4, 0.8])
    out = pushforward(model, x, t, 3, fb, grad="all")
    ref = x
    for _ in range(3):
        ref = torch.cat([model(ref, t / 3), x[:, 2:]], 1)
    torch.testing.assert_close(out, ref[:, :2])
    # grad="last": the gradient equals that of one application at the detached chained input
    lin.weight.grad = None
    pushforward(model, x, t, 3, fb, grad="last").sum().backward()
    g_last = lin.weight.grad.clone()
    with torch.no_grad():
        xin = x
        for _ in range(2):
            xin = torch.cat([model(xin, t / 3), x[:, 2:]], 1)
    lin.weight.grad = None
    model(xin, t / 3).sum().backward()
    torch.testing.assert_close(g_last, lin.weight.grad)
    lin.weight.grad = None
    pushforward(model, x, t, 3, fb, grad="all").sum().backward()
    assert not torch.allclose(g_last, lin.weight.grad)
    with pytest.raises(CheckpointError):
        feedback_pairs(["u", "p"], ["u"])
    # a padded output channel (mask 0) is fed back as 0, not as the model's prediction
    seen = []

    def spy(x, t):
        seen.append(x[:, 1].abs().amax().item())
        return lin(x) + 1.0

    xz = x.clone()
    xz[:, 1] = 0.0
    with torch.no_grad():
        pushforward(spy, xz, t, 3, fb, mask=torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert seen == [0.0, 0.0, 0.0]


def test_roll_rejects_wrong_history():
    with pytest.raises(SciformerError, match="history"):
        roll(lambda x, t: x, torch.zeros(1, 2, 1, 4, 4), None, Plan(2), [0.1, 0.1], [0])


# ---- the `sciformer rollout` command ----------------------------------------------------------------
@dataclass
class OracleConfig:
    """Exact decay times (1 + eps) per application, in normalised units (stats in the config)."""

    in_channels: int = 2
    out_channels: int = 2
    eps: float = 0.0
    means: list[float] = field(default_factory=lambda: [0.0, 0.0])
    stds: list[float] = field(default_factory=lambda: [1.0, 1.0])


class DecayOracle(nn.Module):
    config_class = OracleConfig
    spec = FamilySpec(kind="operator")

    def __init__(self, config: OracleConfig):
        super().__init__()
        self.config = config
        self.scale = nn.Parameter(torch.ones(()))  # something to save

    def forward(self, x, t):
        m = torch.tensor(self.config.means).view(1, -1, 1, 1)
        s = torch.tensor(self.config.stds).view(1, -1, 1, 1)
        phys = x.double() * s + m
        out = phys * (torch.exp(-LAM * t.double() * SPAN) * (1 + self.config.eps)).view(-1, 1, 1, 1) * self.scale
        return ((out - m) / s).float()


models.register("rollout-oracle", DecayOracle)


def _export(tmp_path, store, eps):
    spec = _spec(store)
    cfg = OracleConfig(eps=eps, means=[spec["stats"][v]["mean"] for v in spec["inputs"]],
                       stds=[spec["stats"][v]["std"] for v in spec["inputs"]])
    return models.save(DecayOracle(cfg), tmp_path / "export", extra={"data_spec": spec, "model_name": "rollout-oracle"})


def test_command_writes_dataset_summary_and_plots(tmp_path):
    store = _store(tmp_path, n=5)
    eps = 0.1
    ckpt = _export(tmp_path, store, eps)
    out = tmp_path / "ar" / "rollout.zarr"
    rc = main(["rollout", "--ckpt", str(ckpt), "--data", str(store.path), "--split", "all", "--steps", "8",
               "--batch_size", "2", "--out", str(out)])
    assert rc == 0
    ds = xr.open_zarr(out, chunks=None)
    n_truth, steps = len(TIME) - 1, 8
    assert ds.sizes == {"trajectory": 5, "step": steps, "x": 8, "y": 6, "variable": 2}
    assert ds.trajectory.values.tolist() == [0, 1, 2, 3, 4]  # three batches appended in order
    assert ds.has_truth.values.tolist() == [True] * n_truth + [False] * 2
    np.testing.assert_allclose(ds.time.values[:n_truth], TIME[1:])
    assert ds.attrs["steps_with_truth"] == n_truth and "not scored" in ds.attrs["notes"][1]
    assert ds.u.attrs["units"] == "m/s" and ds.u.dims == ("trajectory", "step", "x", "y")
    truth = np.stack([store.trajectory(i)["u"][1:] for i in range(5)])
    np.testing.assert_allclose(ds.u_true.values[:, :n_truth], truth, rtol=1e-6)
    assert np.isnan(ds.u_true.values[:, n_truth:]).all()
    factor = (1 + eps) ** np.arange(1, steps + 1)
    np.testing.assert_allclose(ds.u.values[:, :n_truth], truth * factor[None, :n_truth, None, None], rtol=2e-5)
    # hand-computed metrics: prediction = (1+eps)^s · truth, so nRMSE = (1+eps)^s − 1 and correlation = 1
    e = factor[:n_truth] - 1
    np.testing.assert_allclose(ds.nrmse.values[:, :n_truth], np.broadcast_to(e[None, :, None], (5, n_truth, 2)),
                               rtol=1e-4)
    y = np.stack([store.trajectory(i)["v"][1:] for i in range(5)]).astype(np.float64)
    vr = e[None] * np.sqrt((y ** 2).mean((2, 3)) / (y.var((2, 3)) + 1e-7))
    np.testing.assert_allclose(ds.vrmse.sel(variable="v").values[:, :n_truth], vr, rtol=1e-4)
    np.testing.assert_allclose(ds.correlation.values[:, :n_truth], 1.0, atol=1e-6)
    assert np.isnan(ds.nrmse.values[:, n_truth:]).all()
    summary = json.loads((out.parent / "summary.json").read_text())
    assert summary["dataset"] == "rollout.zarr" and summary["mode"] == "ar"
    np.testing.assert_allclose(summary["per_step"]["nrmse"]["u"], e, rtol=1e-4)
    assert summary["correlation_time"]["step"] is None and summary["correlation_time"]["threshold"] == 0.8
    assert summary["valid_rollout_length"]["steps_per_trajectory"] == [n_truth] * 5
    np.testing.assert_allclose(summary["apebench_gmean_nrmse"]["value"], np.exp(np.mean(np.log(2 * e))), rtol=1e-4)
    np.testing.assert_allclose(summary["well_vrmse_windows"]["1:5"]["v"], vr.mean(0)[:5].mean(), rtol=1e-4)
    assert summary["well_vrmse_windows"]["6:12"]["steps_used"] == "6:6"
    # persistence baseline: u0 against u0·exp(−λt) at every step, so nRMSE = exp(λt) − 1
    base = summary["baseline_persistence"]["per_step"]["nrmse"]["u"]
    np.testing.assert_allclose(base, np.exp(LAM * (TIME[1:] - TIME[0])) - 1, rtol=1e-4)
    assert "persistence_vrmse" in ds
    # conservation drift of ∫u (u0 > 0): the data's is exp(−λt) − 1, the model's (1+eps)^s·exp(−λt) − 1
    decay = np.exp(-LAM * (TIME[1:] - TIME[0]))
    drift = summary["conservation_drift"]["per_step"]
    np.testing.assert_allclose(drift["truth"]["u"], decay - 1, rtol=1e-5)
    np.testing.assert_allclose(drift["pred"]["u"], factor[:n_truth] * decay - 1, rtol=1e-4)
    assert summary["conservation_drift"]["final"]["u"]["pred"] == pytest.approx(drift["pred"]["u"][-1])
    # energy spectra scale with the prediction squared: error (1+eps)^(2s) − 1 at the plotted steps 1, 3, 5
    assert summary["energy_spectrum_error"]["u"] == pytest.approx({str(s): (1 + eps) ** (2 * s) - 1 for s in (1, 3, 5)})
    for png in ("error_growth.png", "snapshots.png", "spectra.png"):
        assert (out.parent / png).stat().st_size > 1000


def test_command_direct_mode_and_bad_input(tmp_path, capsys):
    store = _store(tmp_path, n=10)
    ckpt = _export(tmp_path, store, 0.1)
    out = tmp_path / "direct" / "rollout.zarr"
    assert main(["rollout", "--ckpt", str(ckpt), "--data", str(store.path), "--mode", "direct", "--out", str(out)]) == 0
    ds = xr.open_zarr(out, chunks=None)
    assert ds.trajectory.values.tolist() == [9]  # the test split of 10 trajectories
    np.testing.assert_allclose(ds.nrmse.values, 0.1, rtol=1e-4)  # one application per step
    np.testing.assert_allclose(ds.lead_time.values, (TIME[1:] - TIME[0]) / SPAN)
    # a store with other variables: a clear error that points to channel adaptation
    other = _store(tmp_path, forcing=True, name="forced.zarr")
    rc = main(["rollout", "--ckpt", str(ckpt), "--data", str(other.path), "--out", str(tmp_path / "x" / "r.zarr")])
    err = capsys.readouterr().err
    assert rc == 1 and "sciformer finetune" in err and not (tmp_path / "x" / "r.zarr").exists()
    # another rollout's summary in the same directory is not overwritten
    rc = main(["rollout", "--ckpt", str(ckpt), "--data", str(store.path), "--out", str(tmp_path / "direct" / "b.zarr")])
    assert rc == 1 and "another rollout" in capsys.readouterr().err


def test_summarize_correlation_time_valid_length_and_blowups():
    n, b = 6, 3
    corr = np.ones((b, n, 2))
    corr[0, 3:] = 0.5  # trajectory 0 decorrelates at step 4
    corr[1, :, 0] = [0.95, 0.9, 0.85, 0.79, 0.7, 0.6]  # mean with variable 1 (= 1) stays above 0.8 until 0.7
    metrics = {"vrmse": np.full((b, n, 2), 0.5), "nrmse": np.full((b, n, 2), 0.25), "correlation": corr}
    metrics["vrmse"][2, 4:] = np.nan  # trajectory 2 blew up at step 5
    metrics["nrmse"][2, 4:] = np.nan
    metrics["correlation"][2, 4:] = np.nan
    s = summarize(metrics, ["u", "v"], np.array([0, 0, 5]), np.arange(1.0, n + 1), threshold=0.8)
    assert s["n_active"] == [3, 3, 3, 3, 2, 2]
    assert s["valid_rollout_length"]["steps_per_trajectory"] == [3, 6, 4]
    # mean correlation per step: step 4: (0.5 + (0.79+1)/2 + 1)/3 = 0.7983 < 0.8
    assert s["correlation_time"]["step"] == 4 and s["correlation_time"]["time"] == 4.0
    assert s["apebench_gmean_nrmse"]["value"] == pytest.approx(0.5)
    assert s["well_vrmse_windows"]["1:5"]["mean"] == pytest.approx(0.5)


def test_energy_spectrum_single_mode_and_parseval():
    n = 32
    x = np.arange(n) / n
    X, Y = np.meshgrid(x, x, indexing="ij")
    f = np.sin(2 * np.pi * 3 * X) + 0.5 * np.cos(2 * np.pi * (4 * X + 3 * Y))  # |k| = 3 and 5
    k, e = energy_spectrum(f[None], 2)
    assert k.tolist() == list(range(17)) and e.shape == (1, 17)
    expected = np.zeros(17)
    expected[3], expected[5] = 0.25, 0.0625  # ½·mean(f_k²): ½·½ and ½·⅛
    np.testing.assert_allclose(e[0], expected, atol=1e-12)
    np.testing.assert_allclose(e.sum(), 0.5 * (f ** 2).mean())


def test_outputs_are_fed_back_by_name_not_position(tmp_path):
    store = _store(tmp_path, independent_v=True)
    spec = _spec(store) | {"outputs": ["v", "u"]}  # the model predicts v first

    def swapped(x, dt, m):
        d = torch.exp(-LAM * dt).view(-1, 1, 1, 1)
        return torch.cat([x[:, 1:2] * d, x[:, :1] * d], 1)

    res = _engine(store, Physical(spec, swapped), spec).run([0, 1])
    assert res.variables == ["u", "v"]
    np.testing.assert_allclose(res.pred, res.truth, rtol=1e-5)


@dataclass
class TinyConvConfig:
    in_channels: int = 1
    out_channels: int = 1
    width: int = 8


class TinyConv(nn.Module):
    """A time-conditioned residual conv net (the lead time enters as an extra constant channel)."""

    config_class = TinyConvConfig
    spec = FamilySpec(kind="operator")

    def __init__(self, config: TinyConvConfig):
        super().__init__()
        self.config = config
        c = config
        self.net = nn.Sequential(nn.Conv2d(c.in_channels + 1, c.width, 3, padding=1, padding_mode="circular"),
                                 nn.GELU(), nn.Conv2d(c.width, c.out_channels, 3, padding=1, padding_mode="circular"))

    def forward(self, x, t):
        tt = (torch.ones(len(x), device=x.device) if t is None else t).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        return x[:, : self.config.out_channels] + self.net(torch.cat([x, tt.to(x.dtype)], 1))


models.register("rollout-tiny-conv", TinyConv)


def test_lightning_checkpoint_and_export_of_a_trained_model(tmp_path):
    """The product path: OperatorTask + FieldDataModule → .ckpt (data spec in its hyper-parameters) → rollout;
    the same model through `sciformer export` gives the same predictions."""
    import lightning as L

    from sciformer.data.fields import FieldDataModule
    from sciformer.tasks.operator import OperatorTask

    store = _store(tmp_path, n=10, forcing=True)
    dm = FieldDataModule([str(store.path)], batch_size=8)
    task = OperatorTask(model="rollout-tiny-conv", data_spec=dm.spec, lr=1e-3)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(task, datamodule=dm)
    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    assert main(["export", str(ckpt), str(tmp_path / "exported")]) == 0
    preds = {}
    for name, path in (("ckpt", ckpt), ("export", tmp_path / "exported")):
        for mode in ("ar", "direct"):
            out = tmp_path / f"{name}-{mode}" / "rollout.zarr"
            assert main(["rollout", "--ckpt", str(path), "--data", str(store.path), "--mode", mode, "--device", "cpu",
                         "--out", str(out)]) == 0
            ds = xr.open_zarr(out, chunks=None)
            assert list(ds.variable.values) == ["u"] and "f" not in ds  # the forcing is an input only
            assert ds.attrs["static_inputs"] == ["f"]
            assert np.isfinite(ds.vrmse.values).all()
            preds[name, mode] = ds.u.values
    np.testing.assert_allclose(preds["ckpt", "ar"], preds["export", "ar"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(preds["ckpt", "ar"], preds["ckpt", "direct"])


def test_bf16_autocast_runs_close_to_float32(tmp_path):
    store = _store(tmp_path)
    torch.manual_seed(0)
    model = TinyConv(TinyConvConfig(in_channels=2, out_channels=2))
    f32 = _engine(store, model, blowup_factor=float("inf")).run([0, 1], steps=3)
    b16 = _engine(store, model, blowup_factor=float("inf"), bf16=True).run([0, 1], steps=3)
    assert b16.pred.dtype == np.float32 and not np.array_equal(f32.pred, b16.pred)
    np.testing.assert_allclose(b16.pred, f32.pred, rtol=5e-2, atol=5e-2)


def test_inputs_listed_static_first_are_laid_out_as_the_spec_says(tmp_path):
    store = _store(tmp_path, forcing=True)
    spec = _spec(store) | {"inputs": ["f", "u"]}  # a spec (e.g. a converted one) with the static field first

    def step(x, dt, m):
        f, u = x[:, :1], x[:, 1:2]
        return u + f * dt.view(-1, 1, 1, 1)

    res = _engine(store, Physical(spec, step), spec).run([0, 3])
    np.testing.assert_allclose(res.pred, res.truth, rtol=1e-4, atol=1e-4)


def test_rollout_on_poseidon_netcdf_and_its_converted_store(tmp_path):
    """Poseidon NetCDF read lazily and the same data converted with `sciformer data convert`: same rollout."""
    netCDF4 = pytest.importorskip("netCDF4")
    vel = np.random.default_rng(3).normal(size=(10, 5, 2, 8, 8)).astype(np.float32)  # [N, T, (u, v), X, Y]
    src = tmp_path / "NS-SL.nc"
    with netCDF4.Dataset(src, "w") as f:
        for d, n in zip(("member", "time", "channel", "x", "y"), vel.shape):
            f.createDimension(d, n)
        f.createVariable("velocity", "f4", ("member", "time", "channel", "x", "y"))[...] = vel
    assert main(["data", "convert", str(src), str(tmp_path / "sl.zarr"), "--from", "poseidon",
                 "--option", "bc=periodic"]) == 0
    store = open_store(tmp_path / "sl.zarr")
    torch.manual_seed(0)
    ckpt = models.save(TinyConv(TinyConvConfig(in_channels=2, out_channels=2)), tmp_path / "tiny",
                       extra={"data_spec": _spec(store), "model_name": "rollout-tiny-conv"})
    preds = []
    for data, name in ((tmp_path / "sl.zarr", "converted"), (src, "netcdf")):
        out = tmp_path / name / "rollout.zarr"
        assert main(["rollout", "--ckpt", str(ckpt), "--data", str(data), "--mode", "direct", "--out", str(out)]) == 0
        ds = xr.open_zarr(out, chunks=None)
        # NS-SL is read transposed, as Poseidon's ShearLayer does (tests/data/test_upstream_poseidon.py)
        np.testing.assert_array_equal(ds.u_true.values[0], np.swapaxes(vel[9, 1:, 0], -2, -1))
        preds.append(ds.u.values)
    np.testing.assert_allclose(preds[0], preds[1], rtol=1e-6, atol=1e-6)
