"""`sciformer finetune` sweep end to end: pretrain -> sweep over sample counts vs scratch -> resume -> report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from heat import heat_store

from sciformer import finetune
from sciformer.data.fields import FieldDataModule
from sciformer.errors import SciformerError
from sciformer.finetune import SweepConfig, fields, sample_sweep, sweep


def test_sweep_writes_results_report_and_resumes(tmp_path, pretrained_ckpt, monkeypatch):
    # downstream: another variable set (u kept, w new) and faster decay: adaptation by name is exercised
    data = heat_store(tmp_path / "down.zarr", ["u", "w"], n=20, seed=1, nu=0.05)
    cfg = SweepConfig(samples=[2, 4, 64], baselines=["scratch"], seeds=[0], epochs=2, batch_size=8,
                      scratch_lr=3e-3, lr=1e-3)
    summary = sweep(pretrained_ckpt, data, cfg, tmp_path / "ft")
    res = json.loads((tmp_path / "ft" / "results.json").read_text())
    # 64 trajectories do not exist (16 in the train split): skipped with a message, the rest ran
    assert set(res["cells"]) == {f"n={n}/{k}/seed=0" for n in (2, 4) for k in ("finetuned", "scratch")}
    assert "train_trajectories=64" in res["skipped"]["n=64/finetuned/seed=0"]
    for cell in res["cells"].values():
        assert np.isfinite(cell[finetune.METRIC]) and cell[finetune.METRIC] > 0
    # the summary is computed from the cells: AG = ε_scratch / ε_finetuned
    t = summary["table"]
    for n in (2, 4):
        assert t["finetuned"][n]["mean"] == pytest.approx(res["cells"][f"n={n}/finetuned/seed=0"][finetune.METRIC])
        ag = t["scratch"][n]["mean"] / t["finetuned"][n]["mean"]
        assert summary["gains"]["scratch"]["AG"][n] == pytest.approx(ag)
    # adaptation by name: the store's u is the checkpoint's u, w is new (the checkpoint knows u, v)
    assert res["variables"] == {"inputs_reused": ["u"], "inputs_new": ["w"], "outputs_reused": ["u"],
                                "outputs_new": ["w"]}
    ft = torch.load(tmp_path / "ft" / "cells" / "n=2" / "finetuned" / "seed=0" / "model.ckpt", weights_only=True)
    assert ft["hyper_parameters"]["data_spec"]["inputs"] == ["u", "w"]
    report = (tmp_path / "ft" / "report.md").read_text()
    assert "inputs reused u, new w" in report
    assert "| 2 |" in report and "| 4 |" in report and "AG vs scratch" in report
    # physics-aware metrics per cell, chosen from the store's metadata: periodic axes -> no boundary RMSE,
    # variables u, w on 2 axes -> no velocity pair -> no divergence
    cell = res["cells"]["n=4/finetuned/seed=0"]
    assert {"phys/vrmse", "phys/nrmse", "phys/energy_spectrum_error"} <= set(cell)
    assert not any(k.startswith(("phys/boundary", "phys/divergence")) for k in cell)
    assert "### phys/vrmse" in report and (tmp_path / "ft" / "error_by_channel_group.png").is_file()
    assert (tmp_path / "ft" / "error_vs_samples.png").stat().st_size > 1000
    assert (tmp_path / "ft" / "cells" / "n=4" / "finetuned" / "seed=0" / "model.ckpt").is_file()

    # rerun: every finished cell is kept, nothing is trained again
    def boom(*a, **k):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(sample_sweep, "run_cell", boom)
    cfg.samples = [2, 4]
    again = sweep(pretrained_ckpt, data, cfg, tmp_path / "ft")
    assert again["table"] == summary["table"]
    # resuming with another budget or store would mix cells that mean different things: refused
    cfg.epochs = 3
    with pytest.raises(SciformerError, match="epochs: 2 -> 3"):
        sweep(pretrained_ckpt, data, cfg, tmp_path / "ft")
    cfg.epochs = 2
    other = heat_store(tmp_path / "other.zarr", ["u", "w"], n=20, seed=2)
    with pytest.raises(SciformerError, match="another --out"):
        sweep(pretrained_ckpt, other, cfg, tmp_path / "ft")


def test_fno_baseline_gets_the_same_budget(tmp_path, pretrained_ckpt):
    pytest.importorskip("neuralop")
    data = heat_store(tmp_path / "down.zarr", ["u", "w"], n=20, seed=1, nu=0.05)
    cfg = SweepConfig(samples=[4], baselines=["fno"], seeds=[0], epochs=1, batch_size=8, fno_model="fno-2d-tiny")
    summary = sweep(pretrained_ckpt, data, cfg, tmp_path / "ft")
    res = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert set(res["cells"]) == {"n=4/finetuned/seed=0", "n=4/fno/seed=0"}
    ag = res["cells"]["n=4/fno/seed=0"][finetune.METRIC] / res["cells"]["n=4/finetuned/seed=0"][finetune.METRIC]
    assert summary["gains"]["fno"]["AG"][4] == pytest.approx(ag)
    assert "AG vs fno" in (tmp_path / "ft" / "report.md").read_text()


class _Zero(torch.nn.Module):
    def forward(self, x, t=None):
        return torch.zeros(x.shape[0], 2, *x.shape[2:])


def test_physics_metrics_of_the_mean_predictor_by_hand(tmp_path):
    """A model that outputs 0 (normalised) predicts each variable's store mean; check VRMSE/nRMSE in numpy."""
    data = heat_store(tmp_path / "h.zarr", ["u", "v"], n=10, seed=3)
    dm = FieldDataModule(stores=[str(data)], batch_size=4)
    dm.setup("test")
    got = fields.physics_metrics(_Zero(), dm, data)
    stats = dm.spec["stats"]
    mean = np.array([stats[v]["mean"] for v in dm.spec["outputs"]])[None, :, None, None]
    vr, nr = [], []
    for batch in dm.test_dataloader():
        std = np.array([max(stats[v]["std"], 1e-12) for v in dm.spec["outputs"]])[None, :, None, None]
        y = batch["y"].double().numpy() * std + mean
        err2 = ((mean - y) ** 2).mean((2, 3))
        vr.append(np.sqrt(err2 / (y.var((2, 3)) + 1e-7)).mean(1))
        nr.append((np.sqrt(err2) / np.sqrt((y ** 2).mean((2, 3)))).mean(1))
    assert got["phys/vrmse"] == pytest.approx(np.concatenate(vr).mean(), rel=1e-6)
    assert got["phys/nrmse"] == pytest.approx(np.concatenate(nr).mean(), rel=1e-6)
    # u, v on periodic x, y: divergence applies; a constant field has none, the random heat modes do
    assert got["phys/divergence_pred"] == pytest.approx(0.0, abs=1e-9)
    assert got["phys/divergence_data"] > 0.1
