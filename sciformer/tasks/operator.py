"""OperatorTask: train a field-to-field operator model (scOT, FactFormer, ...) on all2all or next-step pairs.

Batches come from ``sciformer.data.fields.FieldDataModule``: ``x`` [B, C_in, *S] and ``y`` [B, C_out, *S]
normalised, ``t`` [B] lead time (absent for steady data) and ``mask`` [B, C_out] (0 = padded channel).

Default loss: Poseidon's channel-group relative L1, ``mean_g Σ|ŷ_g − y_g| / Σ|y_g|`` over the batch and the
group's scored channels. Validation reports the median over samples of the per-sample relative L1 in percent
per channel group (Poseidon's headline metric) next to the copy-the-input (persistence) baseline.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sciformer.adaptation import lr_patterns
from sciformer.errors import ConfigError, DataError
from sciformer.metrics.fields import GroupRelativeError, group_relative_error
from sciformer.metrics.physics import VELOCITY_GROUPS
from sciformer.tasks.base import BaseTask


def default_channel_groups(outputs: list[str]) -> list[list[str]]:
    """Velocity components form one group (as Poseidon's [u, v]); every other variable is its own group."""
    groups, used = [], set()
    for family in VELOCITY_GROUPS:
        members = [v for v in outputs if v in family]
        if len(members) > 1:
            groups.append(members)
            used.update(members)
    return groups + [[v] for v in outputs if v not in used]


class OperatorTask(BaseTask):
    """Operator learning on gridded fields.

    Args:
        loss: "rel_l1" (Poseidon), "rel_l2", or "mse" (over scored channels).
        channel_groups: output variable names per group; default: velocity components together, others alone.
        lr_embedding_recovery: LR of the channel-dependent embedding and recovery (Poseidon fine-tuning).
        lr_time_embedding: LR of the time-conditioning parameters of the norms (Poseidon fine-tuning).
        (other arguments: see BaseTask)
    """

    def __init__(
        self,
        model: str | None = "scot-t",
        model_options: dict[str, Any] | None = None,
        loss: str = "rel_l1",
        channel_groups: list[list[str]] | None = None,
        lr: float = 5e-4,
        weight_decay: float = 1e-6,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        lr_embedding_recovery: float | None = None,
        lr_time_embedding: float | None = None,
        lr_groups: dict[str, float] | None = None,
        data_spec: dict[str, Any] | None = None,
        pretrained: str | None = None,
        finetune_mode: str = "full",
        lora_rank: int = 8,
        **options: Any,
    ):
        if loss not in ("rel_l1", "rel_l2", "mse"):
            raise ConfigError(f"model.init_args.loss: {loss!r} is not a loss; use rel_l1, rel_l2 or mse")
        super().__init__(model, model_options, lr, weight_decay, betas, warmup_steps, min_lr_ratio,
                         lr_groups, data_spec, pretrained, finetune_mode, lora_rank, **options)
        spec = data_spec or {}
        self.outputs: list[str] = list(spec.get("outputs", []))
        names = channel_groups or default_channel_groups(self.outputs)
        unknown = [n for g in names for n in g if n not in self.outputs]
        if self.outputs and unknown:
            raise DataError(f"channel_groups name {unknown}, which are not outputs of the data ({self.outputs})")
        self.group_names = ["+".join(g) for g in names] if self.outputs else ["all"]
        self.groups = [[self.outputs.index(n) for n in g] for g in names] if self.outputs else None
        # input channel of each output variable (for the persistence baseline); None if not an input
        inputs = list(spec.get("inputs", []))
        self.persist_index = [inputs.index(n) if n in inputs else None for n in self.outputs]
        # Poseidon's per-group relative L1 (%) of the model and of persistence; torchmetrics gathers the
        # per-sample errors of every rank before the median
        self.eval_errors = nn.ModuleDict({f"{stage}_{name}": GroupRelativeError(self.groups)
                                          for stage in ("val", "test") for name in ("model", "persistence")})

    def lr_patterns(self) -> dict[str, float]:
        """User patterns first, then the family's embedding/recovery and time-embedding groups (its spec)."""
        hp = self.hparams
        patterns = super().lr_patterns()
        for p, lr in lr_patterns(self.model, {"embedding_recovery": hp.lr_embedding_recovery,
                                              "time_embedding": hp.lr_time_embedding}).items():
            patterns.setdefault(p, lr)
        return patterns

    def model_overrides(self) -> dict[str, Any]:
        spec = self.hparams.data_spec or {}
        out = {}
        if "in_channels" in spec:
            out["in_channels"] = spec["in_channels"]
            out["out_channels"] = spec["out_channels"]
        return out

    # ---- loss --------------------------------------------------------------------------------
    def _groups(self, n_channels: int) -> list[list[int]]:
        return self.groups if self.groups is not None else [list(range(n_channels))]

    def loss_fn(self, pred, y, mask) -> torch.Tensor:
        kind = self.hparams.loss
        if kind == "mse":
            w = mask.view(*mask.shape, *([1] * (pred.ndim - 2))).to(pred.dtype)
            return ((pred - y) ** 2 * w).sum() / (w.sum() * pred[0, 0].numel()).clamp_min(1)
        err = group_relative_error(pred, y, mask, self._groups(y.shape[1]), p=1 if kind == "rel_l1" else 2)
        return err.nanmean()

    def step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch["x"], batch["y"]
        mask = batch.get("mask", torch.ones(y.shape[:2], device=y.device))
        t = batch.get("t")
        pred = self.model(x, t)
        loss = self.loss_fn(pred, y, mask)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=x.shape[0], sync_dist=stage != "train")
        if stage != "train":
            self._log_relative_errors(stage, pred, x, y, mask)
        return loss

    def _log_relative_errors(self, stage, pred, x, y, mask) -> None:
        """Per-sample relative L1 in percent per group, for the model and the persistence baseline."""
        if f"{stage}_model" not in self.eval_errors:
            return
        self.eval_errors[f"{stage}_model"].update(pred, y, mask)
        if self.persist_index and all(i is not None for i in self.persist_index):
            self.eval_errors[f"{stage}_persistence"].update(x[:, self.persist_index], y, mask)

    def _reset_eval(self, stage: str) -> None:
        for name in ("model", "persistence"):
            self.eval_errors[f"{stage}_{name}"].reset()

    def on_validation_epoch_start(self):
        self._reset_eval("val")

    def on_test_epoch_start(self):
        self._reset_eval("test")

    def _log_medians(self, stage: str) -> None:
        """Median over samples of the relative L1 (%) per group, and their mean over groups (Poseidon)."""
        for name in ("model", "persistence"):
            metric = self.eval_errors[f"{stage}_{name}"]
            if not metric.update_called:
                continue
            med = metric.compute()["median"].reshape(-1)  # every rank's samples (torchmetrics syncs under DDP)
            prefix = f"{stage}/median_rel_l1" + ("" if name == "model" else f"_{name}")
            for g, m in zip(self.group_names, med):
                self.log(f"{prefix}/{g}", m, sync_dist=False, rank_zero_only=True)
            self.log(prefix, med.nanmean(), prog_bar=name == "model", rank_zero_only=True)
            metric.reset()

    def on_validation_epoch_end(self):
        self._log_medians("val")

    def on_test_epoch_end(self):
        self._log_medians("test")
