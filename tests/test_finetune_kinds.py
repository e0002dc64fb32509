"""`sciformer finetune` on series and atom stores: the same sweep, resume and report as on field stores; the
no-training baselines checked against a float64 recomputation from the stored data."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from sciformer import cli
from sciformer.finetune.series import default_seasonality, forecast_baseline

LOOKBACK, HORIZON = 24, 12


def _quiet_trainer(**kw):
    return L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, **kw)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A tiny hourly series store and an iTransformer-tiny trained one epoch on it (the 'pretrained' model)."""
    from sciformer.data.series_module import SeriesDataModule
    from sciformer.tasks.forecast import ForecastTask

    tmp = tmp_path_factory.mktemp("series")
    t = pd.date_range("2021-03-01", periods=720, freq="h")
    rng = np.random.default_rng(0)
    h = np.arange(720)
    v = np.stack([np.sin(2 * np.pi * h / 24) + 0.1 * rng.normal(size=720),
                  np.cos(2 * np.pi * h / 24) + 0.1 * rng.normal(size=720), 5 + rng.normal(size=720)], 1)
    csv = tmp / "tiny.csv"
    pd.DataFrame(v, columns=["s", "c", "OT"]).assign(date=t)[["date", "s", "c", "OT"]].to_csv(csv, index=False)
    store = tmp / "tiny.zarr"
    assert cli.main(["data", "convert", str(csv), str(store), "--from", "csv"]) == 0
    L.seed_everything(0)
    dm = SeriesDataModule([str(store)], lookback=LOOKBACK, horizon=HORIZON, batch_size=16)
    task = ForecastTask(model="itransformer-tiny", lr=3e-3, data_spec=dm.spec)
    trainer = _quiet_trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(task, datamodule=dm)
    ckpt = tmp / "pre.ckpt"
    trainer.save_checkpoint(ckpt)
    return store, ckpt


def _reference_baseline_mse(store, name: str, m: int) -> float:
    """Every test window scored in float64 straight from the standardised values (benchmark protocol)."""
    from sciformer.data.series import SeriesStore

    s = SeriesStore(store)
    vals = s.standardised().astype(np.float64)
    a, b = s.splits["test"]
    errs = []
    for r in range(max(a, LOOKBACK), b - HORIZON + 1):
        x, y = vals[r - LOOKBACK:r], vals[r:r + HORIZON]
        if name == "persistence":
            pred = np.repeat(x[-1:], HORIZON, 0)
        elif name == "lookback-mean":
            pred = np.repeat(x.mean(0, keepdims=True), HORIZON, 0)
        else:
            pred = x[LOOKBACK - m + np.arange(HORIZON) % m]
        errs.append(((pred - y) ** 2).mean())
    return float(np.mean(errs))


def test_seasonal_naive_repeats_the_last_season():
    x = torch.arange(10.0).view(1, 10, 1)
    assert forecast_baseline("seasonal-naive", x, 7, 4)[0, :, 0].tolist() == [6, 7, 8, 9, 6, 7, 8]
    assert forecast_baseline("persistence", x, 3, 4)[0, :, 0].tolist() == [9, 9, 9]


def test_series_sweep_through_the_command(series, tmp_path):
    store, ckpt = series
    assert default_seasonality(store) == 24  # hourly: a day
    assert default_seasonality(store, lookback=LOOKBACK) == 1  # MASE's scale needs a lookback longer than that
    out = tmp_path / "ft"
    assert cli.main(["finetune", "--ckpt", str(ckpt), "--data", str(store), "--samples", "32,100000",
                     "--epochs", "1", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["kind"] == "series" and res["metric"] == "test/mse" and res["unit"] == "training windows"
    models = ("finetuned", "scratch", "persistence", "lookback-mean", "seasonal-naive")
    assert set(res["cells"]) == {f"n=32/{k}/seed=0" for k in models} | {
        f"n=100000/{k}/seed=0" for k in ("persistence", "lookback-mean", "seasonal-naive")}
    assert "training windows" in res["skipped"]["n=100000/finetuned/seed=0"]
    for name in ("persistence", "lookback-mean", "seasonal-naive"):
        got = res["cells"][f"n=32/{name}/seed=0"]["test/mse"]
        assert got == pytest.approx(_reference_baseline_mse(store, name, 1), rel=1e-5)
    assert res["config"]["seasonality"] == 1
    for k in ("finetuned", "scratch"):
        assert {"test/mse", "test/mae", "test/mase"} <= set(res["cells"][f"n=32/{k}/seed=0"])
    assert set(res["summary"]["gains"]) == {"scratch", "persistence", "lookback-mean", "seasonal-naive"}
    report = (out / "report.md").read_text()
    assert "Samples: training windows" in report and "### test/mase" in report and "variates reused s, c, OT" in report
    # a model of another kind is refused before any cell runs
    other = tmp_path / "other"
    assert cli.main(["finetune", "--ckpt", str(ckpt), "--data", str(store), "--baseline", "fno",
                     "--out", str(other)]) == 1
    assert not other.exists()


@pytest.fixture(scope="module")
def atoms(tmp_path_factory):
    """Molecules with two properties: ``d`` (the C–O distance) and ``e`` (a smooth function of it); a GIN
    pretrained on ``e``."""
    from sciformer.data.atoms import AtomsDataModule, write_store
    from sciformer.tasks.property import PropertyTask

    tmp = tmp_path_factory.mktemp("atoms")
    rng = np.random.default_rng(0)

    def systems(n):
        out = []
        for _ in range(n):
            d = 0.9 + 0.6 * rng.random()
            pos = np.array([[0, 0, 0], [d, 0, 0], [-0.6, 0.9, 0], [-0.6, -0.9, 0], [2.4, 0.3, 0.1]])
            out.append({"atomic_numbers": np.array([6, 8, 1, 1, 7]), "positions": pos,
                        "properties": {"d": d, "e": np.cos(3 * d)}})
        return out

    for name, n in (("train", 60), ("test", 20)):
        write_store(tmp / f"{name}.zarr", systems(n), domain="molecule", source="test", report={"written": n},
                    units={"d": "Å", "e": "eV"})
    L.seed_everything(0)
    dm = AtomsDataModule(train=[str(tmp / "train.zarr")], properties=["e"], batch_size=16)
    task = PropertyTask(model="graph-gine-tiny", lr=3e-3, warmup_steps=0, data_spec=dm.spec)
    trainer = _quiet_trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(task, datamodule=dm)
    trainer.save_checkpoint(tmp / "pre.ckpt")
    return tmp


def test_atoms_sweep_fine_tunes_a_new_property_with_a_new_head(atoms, tmp_path):
    from sciformer.data.atoms import AtomStore

    out = tmp_path / "ft"
    assert cli.main(["finetune", "--ckpt", str(atoms / "pre.ckpt"), "--data", str(atoms / "train.zarr"),
                     "--test_data", str(atoms / "test.zarr"), "--properties", "d", "--samples", "8,1000",
                     "--epochs", "1", "--batch_size", "8", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["kind"] == "atoms" and res["variables"] == {"properties_reused": [], "properties_new": ["d"]}
    assert set(res["cells"]) == {f"n=8/{k}/seed=0" for k in ("finetuned", "scratch", "mean")}
    assert "54 training systems" in res["skipped"]["n=1000/finetuned/seed=0"]
    # the mean predictor: the mean of the 8 training systems, scored on the test store, in Å
    train_d = AtomStore(atoms / "train.zarr").load()._mem["properties/d"][:8].astype(np.float64)
    test_d = AtomStore(atoms / "test.zarr").load()._mem["properties/d"].astype(np.float64)
    mean_cell = res["cells"]["n=8/mean/seed=0"]
    assert mean_cell["test/mae"] == pytest.approx(np.abs(test_d - train_d.mean()).mean(), rel=1e-4)
    assert mean_cell["test/rmse"] == pytest.approx(np.sqrt(((test_d - train_d.mean()) ** 2).mean()), rel=1e-4)
    # the fine-tuned cell kept the pretrained trunk and got a new head for d
    ft = torch.load(out / "cells" / "n=8" / "finetuned" / "seed=0" / "model.ckpt", weights_only=True)
    assert ft["hyper_parameters"]["data_spec"]["properties"] == ["d"]
    assert {"test/mae", "test/rmse"} <= set(res["cells"]["n=8/finetuned/seed=0"])
    assert "properties reused none, new d" in (out / "report.md").read_text()


def test_atoms_sweep_needs_one_property(atoms, tmp_path, capsys):
    rc = cli.main(["finetune", "--ckpt", str(atoms / "pre.ckpt"), "--data", str(atoms / "train.zarr"),
                   "--properties", "d,e", "--out", str(tmp_path / "ft")])
    assert rc == 1 and "choose one property" in capsys.readouterr().err


def test_seasonal_naive_score_matches_the_reference_at_a_real_period(series):
    from sciformer import checkpoints
    from sciformer.finetune.config import SweepConfig
    from sciformer.finetune.series import _data_module, _score_baseline

    store, ckpt = series
    dm = _data_module(checkpoints.read(ckpt), store, SweepConfig(samples=[1], batch_size=32), 0, None)
    got = _score_baseline("seasonal-naive", dm, 12)["test/mse"]
    assert got == pytest.approx(_reference_baseline_mse(store, "seasonal-naive", 12), rel=1e-5)
    assert got != pytest.approx(_reference_baseline_mse(store, "persistence", 1), rel=1e-3)
