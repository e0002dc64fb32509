"""Series rollout: forecasts beyond a model's horizon by feeding its forecasts back, scored per lead step.

``roll_forward`` is the engine; ``rollout_series`` runs it over every window of a split of a series store
(from a Lightning checkpoint or an export) and reports MSE/MAE per lead step on the standardised scale with
the persistence baseline beside it (DECISIONS: every claim reports a trivial baseline). Steps up to the
model's ``pred_len`` are one direct forecast; later steps are autoregressive blocks of ``pred_len``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sciformer.checkpoints import load_model
from sciformer.errors import DataError


@torch.no_grad()
def roll_forward(model: nn.Module, x: torch.Tensor, length: int, marks: torch.Tensor | None = None) -> torch.Tensor:
    """Forecast ``length`` steps beyond the lookback by feeding forecasts back (for horizons > ``pred_len``).

    ``x`` [B, L, N] is the lookback; ``marks`` [B, L + length, F] the time features of the lookback and of the
    forecast span (they are known in advance), or None. Each step predicts ``pred_len`` values (the median of a
    quantile model), appends them to the context and slides the lookback window. Returns [B, length, N].
    """
    L, H = model.config.seq_len, model.config.pred_len
    if x.shape[1] != L:
        raise ValueError(f"lookback {x.shape[1]} != the model's seq_len {L}")
    if marks is not None and marks.shape[1] != L + length:
        raise ValueError(f"marks cover {marks.shape[1]} steps; expected lookback + length = {L + length}")
    context, done = x, 0
    quantiles = list(getattr(model.config, "quantiles", []) or [])
    median = min(range(len(quantiles)), key=lambda i: abs(quantiles[i] - 0.5)) if quantiles else None
    while done < length:
        out = model(context[:, -L:], None if marks is None else marks[:, done: done + L])
        step = out[..., median] if median is not None else out
        context = torch.cat([context, step], 1)
        done += H
    return context[:, L: L + length]


def rollout_series(ckpt: str | os.PathLike, data: str | os.PathLike, length: int, split: str = "test",
                   batch_size: int = 256, out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Roll a series checkpoint out ``length`` steps over every window of ``split`` whose truth is known.

    Returns (and writes as JSON to ``out``) per-step MSE and MAE, their means up to the trained horizon and
    beyond it, and the persistence baseline's per-step MSE.
    """
    from sciformer.data.series import SeriesStore, time_features
    from sciformer.io import write_json

    model, spec = load_model(ckpt, kind="series")
    store = SeriesStore(data)
    L, H = model.config.seq_len, model.config.pred_len
    values = torch.from_numpy(store.standardised())
    freq = spec.get("time_features", "h")
    freq = store.freq if freq == "auto" else freq
    marks = torch.from_numpy(time_features(store.time, freq)) if freq and model.config.n_time_features else None
    a, b = store.splits[split] if split in store.splits else (0, len(store.time))
    first = max(a, L)
    n = b - length - first + 1
    if n <= 0:
        raise DataError(f"{data}: the {split} split [{a}, {b}) holds no window of lookback {L} + length {length}")
    se = torch.zeros(length, dtype=torch.float64)
    ae, se_persist = torch.zeros_like(se), torch.zeros_like(se)
    for s in range(0, n, batch_size):
        starts = first - L + torch.arange(s, min(n, s + batch_size))
        rows = starts[:, None] + torch.arange(L + length)
        w = values[rows]
        x, y = w[:, :L], w[:, L:].double()
        pred = roll_forward(model, x, length, None if marks is None else marks[rows]).double()
        se += ((pred - y) ** 2).mean(-1).sum(0)
        ae += (pred - y).abs().mean(-1).sum(0)
        se_persist += ((x[:, -1:].double() - y) ** 2).mean(-1).sum(0)
    mse, mae, persist = (v.numpy() / n for v in (se, ae, se_persist))
    res = {"ckpt": str(ckpt), "data": str(data), "split": split, "windows": int(n), "lookback": L,
           "trained_horizon": H, "length": length, "mse_per_step": mse, "mae_per_step": mae,
           "persistence_mse_per_step": persist, "mse_within_horizon": float(mse[:H].mean()),
           "mse_beyond_horizon": float(mse[H:].mean()) if length > H else None,
           "persistence_mse_beyond_horizon": float(persist[H:].mean()) if length > H else None}
    if out is not None:
        write_json(Path(out), res)
    return res
