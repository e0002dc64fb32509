"""Series stores: fine-tune a forecaster over training-window counts, against the checkpoint's fresh twin and
the persistence, lookback-mean and seasonal-naive forecasts, scored by the benchmark protocol's MSE/MAE on the
standardised scale, MASE, and CRPS/WQL for quantile models."""

from __future__ import annotations

from pathlib import Path

import torch

from sciformer import checkpoints
from sciformer.errors import SciformerError
from sciformer.finetune.config import SweepConfig, SweepKind
from sciformer.finetune.report import cell_key
from sciformer.finetune.training import train_and_test

FIXED = ("persistence", "lookback-mean", "seasonal-naive")  # forecasts that need no training


def default_seasonality(data: Path, lookback: int | None = None) -> int:
    """One day of steps for sub-daily data (24 hourly, 96 at 15 minutes), a week of days, a year of weeks;
    1 (naive) where the lookback is not longer than that period (MASE's scale needs a longer lookback)."""
    import numpy as np

    from sciformer.data.series import SeriesStore

    time = SeriesStore(data).time
    step = float((time[1] - time[0]) / np.timedelta64(1, "s")) if len(time) > 1 else 86400.0
    if step < 86400:
        m = max(1, round(86400 / step))
    else:
        m = {86400: 7, 7 * 86400: 52}.get(round(step), 12 if step >= 28 * 86400 else 1)
    return m if lookback is None or m < lookback else 1


def _data_module(ck, data: Path, cfg: SweepConfig, seed: int, train_windows: int | None):
    from sciformer.data.series_module import SeriesDataModule

    c = ck.config
    time_features = ck.data_spec.get("time_features", "h") if c.get("n_time_features") else None
    return SeriesDataModule([str(data)], lookback=c["seq_len"], horizon=c["pred_len"], batch_size=cfg.batch_size,
                            time_features=time_features, train_windows=train_windows, seed=seed,
                            num_workers=cfg.num_workers, datasets=ck.data_spec.get("datasets"))


def forecast_baseline(name: str, x: torch.Tensor, horizon: int, seasonality: int) -> torch.Tensor:
    """``[B, H, N]`` forecast of a no-training baseline from the lookback ``x [B, L, N]``."""
    if name == "persistence":
        return x[:, -1:].expand(-1, horizon, -1)
    if name == "lookback-mean":
        return x.mean(1, keepdim=True).expand(-1, horizon, -1)
    L, m = x.shape[1], seasonality
    if m > L:
        raise SciformerError(f"seasonal-naive: the seasonality {m} is longer than the lookback {L}; pass --seasonality")
    return x[:, L - m + torch.arange(horizon) % m]  # the last season, repeated


def _score_baseline(name: str, dm, seasonality: int) -> dict[str, float]:
    from torchmetrics import MeanAbsoluteError, MeanSquaredError

    from sciformer.metrics.forecast import MASE

    mse, mae, mase = MeanSquaredError(), MeanAbsoluteError(), MASE(seasonality)
    for batch in dm.test_dataloader():
        x, y = batch["x"], batch["y"]
        pred = forecast_baseline(name, x, y.shape[1], seasonality)
        mse.update(pred.reshape(-1), y.reshape(-1))
        mae.update(pred.reshape(-1), y.reshape(-1))
        mase.update(pred, y, x)
    return {"test/mse": float(mse.compute()), "test/mae": float(mae.compute()), "test/mase": float(mase.compute())}


def run_cell(ckpt: Path, data: Path, n: int, kind: str, seed: int, cfg: SweepConfig, workdir: Path) -> dict:
    """Train the fine-tuned model or scratch on the last ``n`` training windows and test on every test window;
    the no-training baselines are scored on the same test windows."""
    from sciformer.tasks.forecast import ForecastTask

    ck = checkpoints.read(ckpt, kind="series")
    if kind in FIXED:
        return _score_baseline(kind, _data_module(ck, data, cfg, seed, None), cfg.seasonality)
    available = len(_data_module(ck, data, cfg, seed, None).windows("train")[0])
    if n > available:
        raise SciformerError(f"train_windows={n}: {data} has {available} training windows of lookback "
                             f"{ck.config['seq_len']} + horizon {ck.config['pred_len']}")
    dm = _data_module(ck, data, cfg, seed, n)
    if kind == "finetuned":
        task = ForecastTask(model=ck.model_name, pretrained=str(ckpt), finetune_mode=cfg.mode, lr=cfg.lr,
                            mase_seasonality=cfg.seasonality, data_spec=dm.spec)
    else:  # "scratch": the checkpoint's fresh twin
        name, arch = ck.twin()
        task = ForecastTask(model=name, model_options=arch, lr=cfg.scratch_lr, mase_seasonality=cfg.seasonality,
                            data_spec=dm.spec)
    metrics = train_and_test(task, dm, cfg, workdir / cell_key(n, kind, seed))
    return {k: v for k, v in metrics.items() if k.startswith("test/")}


def variables(ck, data: Path, cfg: SweepConfig) -> dict[str, list[str]]:
    """The store's variates the checkpoint was trained on, and the new ones (an iTransformer has no
    variate-specific parameters: every variate is read by the same embedding)."""
    from sciformer.data.series import SeriesStore

    known = set(ck.data_spec.get("variates") or [])
    for s in ck.data_spec.get("stores") or []:
        known |= set(s.get("variates") or [])
    have = list(SeriesStore(data).variates)
    return {"variates_reused": [v for v in have if v in known], "variates_new": [v for v in have if v not in known]}


def _resolve_seasonality(cfg: SweepConfig, data: Path, ck) -> SweepConfig:
    import dataclasses

    lookback = ck.config["seq_len"]
    if cfg.seasonality is None:
        return dataclasses.replace(cfg, seasonality=default_seasonality(data, lookback))
    if cfg.seasonality >= lookback:
        raise SciformerError(f"--seasonality {cfg.seasonality} must be shorter than the checkpoint's lookback {lookback}")
    return cfg


KIND = SweepKind(
    layout="series", model_kind="series", unit="training windows", metric="test/mse",
    metric_text="MSE over every value of every test window on the standardised scale (the long-horizon "
                "benchmark protocol)",
    baselines=("scratch", *FIXED),
    defaults={"baselines": ["scratch", *FIXED], "lr": 1e-4, "scratch_lr": 1e-4, "batch_size": 32},
    run_cell=run_cell, variables=variables, tables=("test/mae", "test/mase", "test/crps", "test/wql"),
    definitions={"mae": "MAE on the standardised scale, every value of every test window.",
                 "mase": "MASE: MAE scaled per series by the lookback's seasonal-naive error (seasonality in config).",
                 "crps": "CRPS of the quantile forecast (physical units; quantile models only).",
                 "wql": "weighted quantile loss (physical units; quantile models only)."},
    prepare=_resolve_seasonality)
