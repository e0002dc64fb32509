"""The pretraining recipe options of OperatorTask (issue 17): delta targets, patch jitter, input noise and
pushforward, each against a hand computation; and their defaults keep Poseidon's behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sciformer import checkpoints
from sciformer.data.store import open_store
from sciformer.errors import ConfigError
from sciformer.metrics.fields import group_relative_error
from sciformer.models.export import save
from sciformer.nn.delta import attach_delta, increments
from sciformer.rollout import RolloutEngine
from sciformer.tasks.operator import OperatorTask
from tests.helpers.heat import heat_store

SCOT = {"image_size": 16, "patch_size": 4, "embed_dim": 8, "depths": [1, 1], "num_heads": [2, 2], "skip_blocks": [1, 0],
        "window_size": 2}


def _spec(store, delta_scale=None, steady=False, bcs=None):
    names = list(store.variables)
    spec = {"layout": "fields", "inputs": names, "outputs": names, "in_channels": len(names),
            "out_channels": len(names), "stats": dict(store.stats), "roles": dict(store.roles), "steady": steady,
            "spatial_shape": list(store.spatial_shape),
            "boundary_conditions": bcs or dict(store.boundary_conditions)}
    if delta_scale is not None:
        spec["delta_scale"] = delta_scale
    return spec


@pytest.fixture
def store(tmp_path):
    return open_store(heat_store(tmp_path / "heat.zarr", ["u", "v"], n=3, seed=0))


def _task(spec, **kw):
    return OperatorTask(model="scot-tiny", model_options=SCOT, data_spec=spec, **kw)


def _batch(seed=0, b=2, c=2, n=16):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(b, c, n, n, generator=g), "y": torch.randn(b, c, n, n, generator=g),
            "t": torch.rand(b, generator=g), "mask": torch.ones(b, c)}


# ---- delta targets -------------------------------------------------------------------------------------
class Oracle(nn.Module):
    """Returns the true next snapshot's increment in units of ``scale`` (the exact delta a perfect model learns)."""

    def __init__(self, truth: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.truth, self.scale = truth, scale  # truth [N, T, C, *S] normalised

    def forward(self, x, t):
        flat = self.truth.flatten(2)  # [N, T, D]
        out = []
        for xi in x:
            dist = (flat - xi.flatten()).abs().amax(-1)  # the snapshot x equals
            n, k = divmod(int(dist.argmin()), flat.shape[1])
            out.append((self.truth[n, k + 1] - xi) / self.scale.view(-1, 1, 1))
        return torch.stack(out)


def test_delta_rollout_of_the_true_increment_gives_the_truth_back(store):
    scale = {"u": 0.37, "v": 2.5}
    spec = _spec(store, scale)
    norm = {v: (store.stats[v]["mean"], store.stats[v]["std"]) for v in store.variables}
    truth = torch.tensor(np.stack([[[(store.read(v, i, k) - norm[v][0]) / norm[v][1] for v in store.variables]
                                     for k in range(len(store.time))] for i in range(store.n_trajectories)]),
                         dtype=torch.float32)
    model = attach_delta(Oracle(truth, torch.tensor([0.37, 2.5])), spec)
    res = RolloutEngine(model, spec, store, mode="ar", device="cpu").run([0, 1, 2])
    assert res.pred.shape[1] == len(store.time) - 1
    np.testing.assert_allclose(res.pred, res.truth, rtol=1e-5, atol=1e-5)
    # without the reconstruction the same network's output is an increment, far from the states
    raw = RolloutEngine(Oracle(truth, torch.tensor([0.37, 2.5])), spec, store, mode="ar", device="cpu",
                        blowup_factor=float("inf")).run([0], steps=1)
    assert np.abs(raw.pred - raw.truth[:, :1]).max() > 0.1


def test_delta_loss_is_on_increments_and_the_checkpoint_reattaches_it(store, tmp_path):
    spec = _spec(store, {"u": 0.5, "v": 0.25})
    task = _task(spec, target="delta")
    assert task.hparams.data_spec["target"] == "delta"
    b = _batch()
    task.train()
    loss = task.step(b, "train")
    with torch.no_grad():
        pred = task.model(b["x"], b["t"])
    # by hand: increments (state − input) / scale, then Poseidon's group relative L1 (u and v one group: velocity)
    k = torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)
    d_pred, d_true = (pred - b["x"]) / k, (b["y"] - b["x"]) / k
    expect = group_relative_error(d_pred, d_true, b["mask"], [[0, 1]]).nanmean()
    torch.testing.assert_close(loss.detach(), expect, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(increments(task.model, b["x"], pred), d_pred)
    # the model returns x + scale · network: remove the hook to see the network alone
    task.model._delta_hook.remove()
    with torch.no_grad():
        net = task.model(b["x"], b["t"])
    torch.testing.assert_close(pred, b["x"] + k * net, rtol=1e-5, atol=1e-6)
    # an export of it rebuilds the same states-returning model
    task.model._delta_hook = None
    attach_delta(task.model, spec)
    attach_delta(task.model, spec)  # idempotent: one hook
    assert len(task.model._forward_hooks) == 1
    save(task.model, tmp_path / "exp", extra={"data_spec": task.hparams.data_spec, "model_name": "scot-tiny"})
    rebuilt = checkpoints.read(tmp_path / "exp").build()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(b["x"], b["t"]), pred, rtol=1e-5, atol=1e-6)
    assert not any("_delta" in k for k in rebuilt.state_dict())  # the state dict is the family's own


def test_fine_tuning_keeps_the_pretrained_target(store, tmp_path):
    spec = _spec(store, {"u": 0.5, "v": 0.25})
    pre = _task(spec, target="delta")
    save(pre.model, tmp_path / "exp", extra={"data_spec": pre.hparams.data_spec, "model_name": "scot-tiny"})
    ft = OperatorTask(pretrained=str(tmp_path / "exp"), data_spec=spec)
    assert ft.hparams.target == "delta" and ft.model._delta_hook is not None
    steady = {**spec, "steady": True, "outputs": ["u"], "out_channels": 1}  # e.g. Poisson: no previous state
    assert OperatorTask(pretrained=str(tmp_path / "exp"), data_spec=steady).hparams.target == "state"
    plain = _task(spec)
    save(plain.model, tmp_path / "plain", extra={"data_spec": spec, "model_name": "scot-tiny"})
    assert OperatorTask(pretrained=str(tmp_path / "plain"), data_spec=spec).hparams.target == "state"


def test_delta_refusals(store):
    with pytest.raises(ConfigError, match="steady"):
        _task(_spec(store, {"u": 1, "v": 1}, steady=True), target="delta")
    with pytest.raises(ConfigError, match="difference statistics"):
        _task(_spec(store, {"u": 1}), target="delta")
    with pytest.raises(ConfigError, match="residual"):
        OperatorTask(model="scot-tiny", model_options={**SCOT, "residual": True},
                     data_spec=_spec(store, {"u": 1, "v": 1}), target="delta")
    with pytest.raises(ConfigError, match="target"):
        _task(_spec(store), target="increment")
    for bad in ({"patch_jitter": -1}, {"input_noise": -0.1}, {"pushforward": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            _task(_spec(store), **bad)


# ---- patch jitter --------------------------------------------------------------------------------------
class CircularConv(nn.Module):
    """Translation-equivariant on a periodic grid: a roll of the input rolls the output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular")
        self.config = None

    def forward(self, x, t):
        return self.conv(x)


def test_jitter_on_periodic_fields_leaves_an_equivariant_models_loss_unchanged(store):
    task = _task(_spec(store), patch_jitter=4)
    task.model = CircularConv()
    b = _batch(1)
    task.train()
    plain = task.loss_fn(task.model(b["x"], b["t"]), b["y"], b["mask"])
    moved = 0
    for seed in range(12):
        torch.manual_seed(seed)
        x, y, w = task._jitter(b["x"], b["y"])
        assert w is None  # nothing to mask on a periodic grid
        moved += not torch.equal(x, b["x"])
        torch.manual_seed(seed)
        loss = task.step(b, "train")
        torch.testing.assert_close(loss.detach(), plain.detach(), rtol=1e-5, atol=1e-6)
    assert moved >= 8  # the grid really moves (P(no shift) = 1/25 per draw)
    # the shifts really vary: averaged over all shifts, un-rolled inputs are the input
    shifts = [(a, c) for a in range(5) for c in range(5)]
    mean = torch.stack([b["x"].roll((a, c), (2, 3)).roll((-a, -c), (2, 3)) for a, c in shifts]).mean(0)
    torch.testing.assert_close(mean, b["x"])


def test_jitter_on_walls_masks_the_rolled_in_band(store):
    task = _task(_spec(store, bcs={"x": "wall", "y": "periodic"}), patch_jitter=3)
    b = _batch(2)
    for seed in range(20):
        torch.manual_seed(seed)
        sx, sy = torch.randint(0, 4, (2,)).tolist()
        if sx:
            break
    torch.manual_seed(seed)
    x, y, w = task._jitter(b["x"], b["y"])
    torch.testing.assert_close(x[:, :, sx:], b["x"].roll(sy, 3)[:, :, :-sx])  # shifted along x, rolled along y
    assert torch.all(x[:, :, :sx] == 0) and torch.all(w[..., :sx, :] == 0) and torch.all(w[..., sx:, :] == 1)
    pred = torch.randn_like(y)
    base = task.loss_fn(pred, y, b["mask"], w)
    pred2 = pred.clone()
    pred2[:, :, :sx] += 100.0  # the band is never scored
    torch.testing.assert_close(task.loss_fn(pred2, y, b["mask"], w), base)
    pred2[:, :, sx] += 1.0
    assert task.loss_fn(pred2, y, b["mask"], w) > base


# ---- input noise and pushforward -----------------------------------------------------------------------
def test_input_noise_only_on_state_inputs(tmp_path):
    store = open_store(heat_store(tmp_path / "h.zarr", ["u", "v"], n=3, seed=0))
    spec = _spec(store)
    spec["inputs"] = ["u", "v", "c"]  # a static coefficient after the states
    spec["in_channels"] = 3
    task = OperatorTask(model="scot-tiny", model_options=SCOT, data_spec=spec, input_noise=0.05)
    x = torch.zeros(64, 3, 16, 16)
    noisy = task._add_noise(x)
    assert torch.equal(noisy[:, 2], x[:, 2])
    std = noisy[:, :2].std().item()
    assert abs(std - 0.05) < 0.05 * 0.02  # 32,768 draws: the std's relative error is ~0.4 %
    task.eval()
    b = _batch(3)
    b["x"] = torch.randn(2, 3, 16, 16)
    assert torch.equal(task.predict_pair(b["x"], b["t"], b["mask"]), task.model(b["x"], b["t"]))


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.9))
        self.config = None

    def forward(self, x, t):
        return self.a * x * (1 + t.view(-1, 1, 1, 1))


def test_pushforward_chains_sub_steps_with_gradient_through_the_last(store):
    task = _task(_spec(store), pushforward=2)
    task.model = Linear()
    b = _batch(4)
    task.train()
    pred = task.predict_pair(b["x"], b["t"], b["mask"])
    h = (1 + b["t"] / 2).view(-1, 1, 1, 1)
    torch.testing.assert_close(pred, 0.81 * b["x"] * h * h)
    pred.sum().backward()  # only the last application carries gradient: d/da (a · x1 · h) with x1 fixed
    torch.testing.assert_close(task.model.a.grad, (0.9 * b["x"] * h * h).sum())
    task.eval()
    torch.testing.assert_close(task.predict_pair(b["x"], b["t"], b["mask"]), 0.9 * b["x"] * (1 + b["t"]).view(-1, 1, 1, 1))
    with pytest.raises(ConfigError, match="steady"):
        _task(_spec(store, steady=True), pushforward=2)


# ---- defaults ------------------------------------------------------------------------------------------
def test_defaults_are_poseidons_step(store):
    task = _task(_spec(store))
    assert (task.hparams.target, task.hparams.patch_jitter, task.hparams.input_noise, task.hparams.pushforward) == \
        ("state", 0, 0.0, 1)
    b = _batch(5)
    task.train()
    torch.manual_seed(0)
    loss = task.step(b, "train")
    with torch.no_grad():
        pred = task.model(b["x"], b["t"])
    expect = group_relative_error(pred, b["y"], b["mask"], [[0, 1]]).nanmean()
    torch.testing.assert_close(loss.detach(), expect, rtol=1e-5, atol=1e-6)


def test_onnx_export_of_a_delta_model_returns_states(store, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from sciformer.onnx_export import export_onnx

    spec = _spec(store, {"u": 0.5, "v": 0.25})
    task = OperatorTask(model="factformer-2d-tiny", model_options={"dim": 16, "depth": 1, "heads": 2, "dim_head": 8},
                        data_spec=spec, target="delta")
    save(task.model, tmp_path / "exp", extra={"data_spec": task.hparams.data_spec, "model_name": "factformer-2d-tiny"})
    path = export_onnx(tmp_path / "exp")
    b = _batch(6)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    got = sess.run(None, dict(zip(names, (b["x"].numpy(), b["t"].numpy()))))[0]
    with torch.no_grad():
        states = task.model.eval()(b["x"], b["t"])
    np.testing.assert_allclose(got, states.numpy(), rtol=1e-4, atol=1e-4)
