"""End to end through the `sciformer` command: convert a CSV, fit, test; checkpoints tied to their lookback."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from sciformer.cli import main
from sciformer.errors import CheckpointError
from sciformer.tasks.forecast import ForecastTask

CONFIG = """
seed_everything: 0
trainer:
  max_epochs: 2
  accelerator: cpu
  enable_progress_bar: false
  enable_model_summary: false
  log_every_n_steps: 1
  default_root_dir: {root}
  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {root}, name: csv}}}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{monitor: val/mse, mode: min, save_top_k: 1, filename: best, dirpath: {root}/checkpoints}}
model:
  class_path: sciformer.tasks.forecast.ForecastTask
  init_args: {{model: itransformer-tiny, lr: 3.0e-3, model_options: {{quantiles: {quantiles}}}}}
data:
  class_path: sciformer.data.series_module.SeriesDataModule
  init_args: {{stores: [{store}], lookback: 24, horizon: 12, batch_size: 16, eval_batch_size: 64}}
"""


@pytest.fixture
def store(tmp_path):
    # a daily cycle plus noise, hourly, CRLF line endings: 30 days = 720 rows
    t = pd.date_range("2021-03-01", periods=720, freq="h")
    rng = np.random.default_rng(0)
    hours = np.arange(720)
    v = np.stack([np.sin(2 * np.pi * hours / 24) + 0.1 * rng.normal(size=720),
                  np.cos(2 * np.pi * hours / 24) + 0.1 * rng.normal(size=720), 5 + rng.normal(size=720)], 1)
    csv = tmp_path / "tiny.csv"
    pd.DataFrame(v, columns=["s", "c", "OT"]).assign(date=t)[["date", "s", "c", "OT"]].to_csv(
        csv, index=False, lineterminator="\r\n")
    out = tmp_path / "tiny.zarr"
    assert main(["data", "convert", str(csv), str(out), "--from", "csv"]) == 0
    return out


def _metrics(root):
    """Metrics of the latest run (fit and test log to their own versions)."""
    runs = sorted((root / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    return pd.read_csv(runs[-1])


@pytest.mark.parametrize("quantiles", [[], [0.1, 0.5, 0.9]], ids=["point", "quantile"])
def test_convert_fit_test(tmp_path, store, quantiles, capsys):
    root = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG.format(root=root, store=store, quantiles=quantiles))
    assert main(["fit", "-c", str(cfg)]) == 0, capsys.readouterr().err[-2000:]
    m = _metrics(root)
    val = m.dropna(subset=["val/mse"])
    assert len(val) == 2
    # the model learns the daily cycle: better than the lookback-mean and persistence baselines
    assert val["val/mse"].iloc[-1] < val["val/mse_mean"].iloc[-1]
    assert val["val/mse"].iloc[-1] < val["val/mse_persistence"].iloc[-1]
    if quantiles:
        assert {"val/crps", "val/wql"} <= set(m.columns)
    ckpt = root / "checkpoints" / "best.ckpt"
    assert main(["test", "-c", str(cfg), "--ckpt_path", str(ckpt)]) == 0, capsys.readouterr().err[-2000:]
    tested = _metrics(root)
    assert "test/mse" in tested and np.isfinite(tested["test/mse"].dropna()).all()
    assert len(tested["test/mse"].dropna()) == 1


def test_checkpoint_with_other_lookback_is_refused(tmp_path, store, capsys):
    root = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG.format(root=root, store=store, quantiles=[]).replace("max_epochs: 2", "max_epochs: 1"))
    assert main(["fit", "-c", str(cfg)]) == 0
    ckpt = str(root / "checkpoints" / "best.ckpt")
    spec = {"lookback": 48, "horizon": 12, "n_time_features": 4}
    with pytest.raises(CheckpointError, match="seq_len=24 but the data's lookback is 48"):
        ForecastTask(model=None, pretrained=ckpt, data_spec=spec)
    task = ForecastTask(model=None, pretrained=ckpt, data_spec={**spec, "lookback": 24})  # fine-tuning start
    ref = torch.load(ckpt, weights_only=True)["state_dict"]
    assert torch.equal(task.model.embed.weight, ref["model.embed.weight"])


def test_halving_schedule_matches_reference():
    task = ForecastTask(model="itransformer-tiny", lr=1e-3)
    opt = task.configure_optimizers()
    sched, lrs = opt["lr_scheduler"]["scheduler"], []
    for _ in range(4):
        lrs.append(opt["optimizer"].param_groups[0]["lr"])
        opt["optimizer"].step()
        sched.step()
    assert lrs == [1e-3, 1e-3, 5e-4, 2.5e-4]  # epochs 1-2 at lr0, then halved every epoch


class _LinearOracle(torch.nn.Module):
    """Continues each variate's straight line exactly; adds mark[0] of the last lookback step (alignment)."""

    def __init__(self, seq_len=8, pred_len=3):
        super().__init__()
        self.config = type("C", (), {"seq_len": seq_len, "pred_len": pred_len, "quantiles": []})()

    def forward(self, x, x_mark=None):
        slope = x[:, -1] - x[:, -2]
        steps = torch.arange(1, self.config.pred_len + 1, dtype=x.dtype)[None, :, None]
        shift = 0 if x_mark is None else x_mark[:, -1:, :1]  # [B, 1, 1]
        return x[:, -1:] + slope[:, None] * steps + shift


def test_roll_forward_feeds_forecasts_back():
    from sciformer.rollout.series import roll_forward

    t = torch.arange(8, dtype=torch.float64)
    x = torch.stack([2 * t + 1, -t], -1)[None]  # [1, 8, 2], two straight lines
    out = roll_forward(_LinearOracle(), x, length=7)  # 3 + 3 + 1 steps, beyond the horizon of 3
    future = torch.arange(8, 15, dtype=torch.float64)
    torch.testing.assert_close(out[0], torch.stack([2 * future + 1, -future], -1))
    # the time features slide with the window: a mark equal to the step index shifts each block by its start
    marks = torch.zeros(1, 15, 1, dtype=torch.float64)
    marks[0, 7] = 100.0  # only the first window's last lookback mark is non-zero
    shifted = roll_forward(_LinearOracle(), x, length=7, marks=marks)
    # block 1 is shifted by 100; block 2 continues block 1's last value and slope, so it is shifted too; block 2's
    # own last lookback mark (index 10) is 0, so no second shift
    torch.testing.assert_close(shifted[0] - out[0], torch.full((7, 2), 100.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="marks cover"):
        roll_forward(_LinearOracle(), x, length=6, marks=marks[:, :10])


def test_rollout_series_scores_each_step(tmp_path, store):
    from sciformer import models
    from sciformer.data.series import SeriesStore, time_features
    from sciformer.rollout.series import roll_forward, rollout_series

    torch.manual_seed(0)
    net = models.get("itransformer-tiny").eval()  # lookback 24, horizon 12
    models.save(net, tmp_path / "export", extra={"data_spec": {"layout": "series", "time_features": "h"}})
    res = rollout_series(tmp_path / "export", store, length=30, split="test", batch_size=7, out=tmp_path / "r.json")
    s = SeriesStore(store)
    a, b = s.splits["test"]  # ratio split of 720 rows: [576, 720)
    assert res["windows"] == b - 30 - a + 1 and (tmp_path / "r.json").exists()
    z, marks = torch.from_numpy(s.standardised()), torch.from_numpy(time_features(s.time, "h"))
    last = a + res["windows"] - 1  # the last window's first target row
    pred = roll_forward(net, z[None, last - 24: last], 30, marks[None, last - 24: last + 30])[0].double()
    assert pred.shape == (30, 3)
    # recompute the per-step MSE over every window by hand (float64) and compare
    errs = []
    for t0 in range(a, a + res["windows"]):
        p = roll_forward(net, z[None, t0 - 24: t0], 30, marks[None, t0 - 24: t0 + 30])[0].double()
        errs.append(((p - z[t0: t0 + 30].double()) ** 2).mean(-1))
    np.testing.assert_allclose(res["mse_per_step"], torch.stack(errs).mean(0).numpy(), rtol=1e-5)
    assert res["mse_beyond_horizon"] == pytest.approx(float(np.mean(res["mse_per_step"][12:])))
    # `sciformer rollout` dispatches series stores to the same engine
    from sciformer.rollout import rollout

    summary = rollout(ckpt=tmp_path / "export", data=store, steps=30, batch_size=7, out=tmp_path / "cli" / "r.zarr")
    assert json.loads(summary.read_text())["mse_per_step"] == pytest.approx(res["mse_per_step"])
