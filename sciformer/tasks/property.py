"""PropertyTask: regression of per-system properties (band gap, formation energy, ...) with a graph model.

Batches are PyG batches from ``sciformer.data.atoms.AtomsDataModule`` with ``y`` [B, P] normalised by the
training mean/std (``data_spec``) and ``y_mask`` [B, P] (missing labels are not scored). Loss: masked L1 on the
normalised targets (or MSE). Validation and test log the MAE per target in the data's units next to the
mean predictor's MAE (the trivial baseline: predict the training mean).
"""

from __future__ import annotations

from typing import Any

import torch

from sciformer.errors import ConfigError, DataError
from sciformer.tasks.base import BaseTask


class PropertyTask(BaseTask):
    """Graph regression. Args: ``loss`` "l1" | "mse"; others: see BaseTask."""

    def __init__(self, model: str | None = "graph-gps", model_options: dict[str, Any] | None = None,
                 loss: str = "l1", lr: float = 1e-3, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), warmup_steps: int = 100, min_lr_ratio: float = 0.01,
                 lr_groups: dict[str, float] | None = None, data_spec: dict[str, Any] | None = None,
                 pretrained: str | None = None, finetune_mode: str = "full", lora_rank: int = 8, **options: Any):
        if loss not in ("l1", "mse"):
            raise ConfigError(f"model.init_args.loss={loss!r}: use 'l1' or 'mse'")
        super().__init__(model, model_options, lr, weight_decay, betas, warmup_steps, min_lr_ratio, lr_groups,
                         data_spec, pretrained, finetune_mode, lora_rank, **options)

    def model_overrides(self) -> dict[str, Any]:
        props = (self.hparams.data_spec or {}).get("properties", [])
        if not props:
            raise DataError("PropertyTask needs `data.init_args.properties` (the targets to predict)")
        return {"num_targets": len(props)}

    def step(self, batch, stage: str) -> torch.Tensor:
        pred = self.model(batch)  # [B, P]
        y, m = batch.y.to(pred.dtype), batch.y_mask.to(pred.dtype)
        err = (pred - y).abs() if self.hparams.loss == "l1" else (pred - y) ** 2
        loss = (err * m).sum() / m.sum().clamp_min(1.0)
        bs = int(y.shape[0])
        self.log(f"{stage}/loss", loss, batch_size=bs, prog_bar=True, on_step=stage == "train", on_epoch=stage != "train")
        if stage != "train":
            spec = self.hparams.data_spec
            for k, name in enumerate(spec["properties"]):
                sel = batch.y_mask[:, k]
                if sel.any():
                    std = spec["property_std"][k]
                    self.log(f"{stage}/mae_{name}", (pred[sel, k] - y[sel, k]).abs().mean() * std, batch_size=int(sel.sum()))
                    self.log(f"{stage}/mse_{name}", ((pred[sel, k] - y[sel, k]) ** 2).mean() * std ** 2,
                             batch_size=int(sel.sum()))
                    self.log(f"{stage}/baseline_mae_{name}", y[sel, k].abs().mean() * std, batch_size=int(sel.sum()))
        return loss
