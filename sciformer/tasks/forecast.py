"""ForecastTask: train a series model (iTransformer) on forecast windows from ``SeriesDataModule``.

Metrics follow the long-horizon benchmark protocol: MSE and MAE over every value of every window on the
*standardised* scale (``{stage}/mse``, ``{stage}/mae``), with MASE (seasonality ``mase_seasonality``, scale
free) beside them, and two trivial baselines (DECISIONS: every claim reports one): repeat the last lookback
value (``mse_persistence``) and the lookback mean (``mse_mean``). Quantile models are trained with the
pinball loss; their point forecast is the median level, and CRPS and WQL are computed on the physical scale.

A model with dataset tokens (``model_options.dataset_tokens``) is given each batch's ``dataset`` ids; its
token count must be the size of the data's vocabulary (``data_spec["datasets"]``) and, from a checkpoint,
that vocabulary must be the checkpoint's (pass it as the data module's ``datasets``), so that ids keep their
meaning; other models never see the ids.

The default optimisation is the reference's: Adam (AdamW with no weight decay), lr 1e-4, halved after every
epoch from the second on (``schedule="halving"``, the reference's "type1").
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError

from sciformer import checkpoints
from sciformer.errors import CheckpointError, ConfigError
from sciformer.metrics.forecast import MASE, QuantileCRPS, WeightedQuantileLoss, pinball_loss
from sciformer.tasks.base import BaseTask

STAGES = ("val", "test")


class ForecastTask(BaseTask):
    """Multivariate forecasting.

    Args:
        schedule: "halving" (lr · 0.5^(epoch−1) from the second epoch on, per epoch) or "cosine" (BaseTask's
            warmup + cosine, per step).
        mase_seasonality: m of MASE's seasonal-naive scale (1 = naive).
        (other arguments: see BaseTask; ``model_options.quantiles`` makes a probabilistic model)
    """

    def __init__(self, model: str | None = "itransformer", model_options: dict[str, Any] | None = None,
                 lr: float = 1e-4, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                 schedule: str = "halving", warmup_steps: int = 0, min_lr_ratio: float = 0.0,
                 mase_seasonality: int = 1, lr_groups: dict[str, float] | None = None,
                 data_spec: dict[str, Any] | None = None, pretrained: str | None = None,
                 finetune_mode: str = "full", lora_rank: int = 8, **options: Any):
        if schedule not in ("halving", "cosine"):
            raise ConfigError(f"model.init_args.schedule={schedule!r}: use 'halving' or 'cosine'")
        super().__init__(model, model_options, lr, weight_decay, betas, warmup_steps, min_lr_ratio, lr_groups,
                         data_spec, pretrained, finetune_mode, lora_rank, **options)
        self._check_windows()
        self._check_datasets()
        self.quantiles = list(self.model.config.quantiles)
        self.median = min(range(len(self.quantiles)), key=lambda i: abs(self.quantiles[i] - 0.5)) \
            if self.quantiles else None
        self.metrics = nn.ModuleDict({s: self._metrics() for s in STAGES})

    def _metrics(self) -> nn.ModuleDict:
        m = {"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "mase": MASE(self.hparams.mase_seasonality),
             "mse_persistence": MeanSquaredError(), "mse_mean": MeanSquaredError()}
        if self.quantiles:
            m |= {"crps": QuantileCRPS(self.quantiles), "wql": WeightedQuantileLoss(self.quantiles)}
        return nn.ModuleDict(m)

    def model_overrides(self) -> dict[str, Any]:
        spec = self.hparams.data_spec or {}
        keys = {"lookback": "seq_len", "horizon": "pred_len", "n_time_features": "n_time_features"}
        return {k: spec[s] for s, k in keys.items() if s in spec}

    def _check_windows(self) -> None:
        """A model is tied to its lookback (its embedding is Linear(seq_len, d_model)): refuse other windows."""
        spec, cfg = self.hparams.data_spec or {}, self.model.config
        for key, field in (("lookback", "seq_len"), ("horizon", "pred_len")):
            if key in spec and spec[key] != getattr(cfg, field):
                hint = "retrain, or convert the data with the model's lookback" if key == "lookback" else \
                    f"pass model_options: {{pred_len: {spec[key]}}} to re-initialise the projection"
                raise CheckpointError(f"the model has {field}={getattr(cfg, field)} but the data's {key} is "
                                      f"{spec[key]}; {hint}")

    def _check_datasets(self) -> None:
        """Dataset ids index the model's token table: the data's vocabulary must be the one it was built for."""
        k = getattr(self.model.config, "dataset_tokens", 0)
        vocab = (self.hparams.data_spec or {}).get("datasets")
        if not k or vocab is None:
            return
        if self.hparams.pretrained:
            theirs = checkpoints.read(self.hparams.pretrained).data_spec.get("datasets")
            if theirs is not None and list(theirs) != list(vocab):
                raise CheckpointError(f"the checkpoint's data-set vocabulary is {list(theirs)} but the data's is "
                                      f"{list(vocab)}; pass data.datasets={list(theirs)} so ids keep their meaning")
        if len(vocab) != k:
            raise ConfigError(f"model_options.dataset_tokens={k} but the data names {len(vocab)} data sets "
                              f"{list(vocab)}; set dataset_tokens: {len(vocab)}")

    # ---- steps -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None,
                dataset: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x, x_mark, dataset)

    def predict_batch(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's output for a batch; the data-set ids go only to a model with dataset tokens."""
        if getattr(self.model.config, "dataset_tokens", 0):
            return self.model(batch["x"], batch.get("x_mark"), batch.get("dataset"))
        return self.model(batch["x"], batch.get("x_mark"))

    def point(self, out: torch.Tensor) -> torch.Tensor:
        """The point forecast [B, H, N] of a model output (the median level of a quantile model)."""
        return out[..., self.median] if self.quantiles else out

    def loss_fn(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pinball_loss(out, y, self.quantiles) if self.quantiles else F.mse_loss(out, y)

    def step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch["x"], batch["y"]
        out = self.predict_batch(batch)
        loss = self.loss_fn(out, y)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "train", batch_size=x.shape[0],
                 sync_dist=stage != "train")
        if stage in STAGES:
            self._update(stage, out.detach(), batch)
        return loss

    def _update(self, stage: str, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        x, y = batch["x"], batch["y"]
        pred, m = self.point(out), self.metrics[stage]
        flat = y.reshape(-1)
        m["mse"].update(pred.reshape(-1), flat)
        m["mae"].update(pred.reshape(-1), flat)
        m["mase"].update(pred, y, x)
        m["mse_persistence"].update(x[:, -1:].expand_as(y).reshape(-1), flat)
        m["mse_mean"].update(x.mean(1, keepdim=True).expand_as(y).reshape(-1), flat)
        if self.quantiles:  # scale-dependent scores on the physical scale
            loc, scale = batch["loc"], batch["scale"]
            phys_y, phys_q = y * scale + loc, out * scale[:, None] + loc[:, None]
            m["crps"].update(phys_q, phys_y)
            m["wql"].update(phys_q, phys_y)
        for name, metric in m.items():
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "mse",
                     batch_size=x.shape[0])

    # ---- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self):
        if self.hparams.schedule == "cosine":
            return super().configure_optimizers()
        # on CPU the fused kernel (one call for all tensors) replaces ~10 small ops per tensor: ~1.5 ms a step
        fused = all(p.device.type == "cpu" for p in self.parameters()) or None
        opt = torch.optim.AdamW(self.param_groups(), lr=self.hparams.lr, betas=tuple(self.hparams.betas), fused=fused)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.5 ** max(0, epoch - 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

