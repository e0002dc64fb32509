"""OperatorTask: train a field-to-field operator model (scOT, FactFormer, ...) on all2all or next-step pairs.

Batches come from ``sciformer.data.fields.FieldDataModule``: ``x`` [B, C_in, *S] and ``y`` [B, C_out, *S]
normalised, ``t`` [B] lead time (absent for steady data) and ``mask`` [B, C_out] (0 = padded channel).

Default loss: Poseidon's channel-group relative L1, ``mean_g Σ|ŷ_g − y_g| / Σ|y_g|`` over the batch and the
group's scored channels. Validation reports the median over samples of the per-sample relative L1 in percent
per channel group (Poseidon's headline metric) next to the copy-the-input (persistence) baseline.

Recipe options for cross-physics pretraining (issue 17), each off by default (Poseidon's behaviour):
``target: delta`` (predict increments, :mod:`sciformer.nn.delta`), ``patch_jitter`` (random shifts of the grid
against the patch grid), ``input_noise`` and ``pushforward`` (stable autoregressive rollouts).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sciformer.adaptation import lr_patterns
from sciformer.errors import ConfigError, DataError
from sciformer.metrics.fields import GroupRelativeError, group_relative_error
from sciformer.metrics.physics import VELOCITY_GROUPS
from sciformer.nn.delta import TARGETS, attach_delta, increments
from sciformer.rollout.engine import feedback_pairs, pushforward
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


def _pretrained_target(pretrained: str | None) -> str:
    """The output convention a pretrained checkpoint was trained with ("state" when none is recorded)."""
    if not pretrained:
        return "state"
    from sciformer import checkpoints

    return str(checkpoints.read(pretrained).data_spec.get("target", "state"))


class OperatorTask(BaseTask):
    """Operator learning on gridded fields.

    Args:
        loss: "rel_l1" (Poseidon), "rel_l2", or "mse" (over scored channels).
        channel_groups: output variable names per group; default: velocity components together, others alone.
        lr_embedding_recovery: LR of the channel-dependent embedding and recovery (Poseidon fine-tuning).
        lr_time_embedding: LR of the time-conditioning parameters of the norms (Poseidon fine-tuning).
        target: "state" (Poseidon) or "delta": the network predicts each state's increment in units of one stored
            step's typical increment (data spec ``delta_scale``) and the loss is taken on increments; the model
            still returns states. Default: the pretrained checkpoint's target ("state" without one, or on steady data).
        patch_jitter: in training, shift the grid by 0..patch_jitter cells per axis at random (one shift per
            batch): a roll on periodic axes, a shift with masked (unscored) fill on the others.
        input_noise: in training, add Gaussian noise of this std (normalised units) to the state inputs, so the
            model learns to correct the errors of its own rollouts.
        pushforward: in training, reach each pair in this many chained sub-steps of the lead time, all but the
            last without gradient (Brandstetter et al. 2022); 1 = off.
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
        target: str | None = None,
        patch_jitter: int = 0,
        input_noise: float = 0.0,
        pushforward: int = 1,
        **options: Any,
    ):
        if loss not in ("rel_l1", "rel_l2", "mse"):
            raise ConfigError(f"model.init_args.loss: {loss!r} is not a loss; use rel_l1, rel_l2 or mse")
        if target is None:  # fine-tuning keeps the pretrained model's output convention (steady data: states)
            target = "state" if (data_spec or {}).get("steady") else _pretrained_target(pretrained)
        if target not in TARGETS:
            raise ConfigError(f"model.init_args.target: {target!r}; use one of {', '.join(TARGETS)}")
        for name, value, low in (("patch_jitter", patch_jitter, 0), ("input_noise", input_noise, 0),
                                 ("pushforward", pushforward, 1)):
            if value < low:
                raise ConfigError(f"model.init_args.{name} must be ≥ {low}, got {value}")
        if target == "delta" and data_spec is not None:  # the saved spec tells every reader how to read outputs
            data_spec = {**data_spec, "target": "delta"}
        super().__init__(model, model_options, lr, weight_decay, betas, warmup_steps, min_lr_ratio,
                         lr_groups, data_spec, pretrained, finetune_mode, lora_rank, **options)
        # what the checkpoint records (also when the CLI hands Lightning its own copy of the arguments)
        self.hparams.update(target=target, data_spec=data_spec)
        spec = data_spec or {}
        if target == "delta":
            attach_delta(self.model, spec)
        self._feedback = None
        if pushforward > 1 and spec:
            if spec.get("steady"):
                raise ConfigError("model.init_args.pushforward: a steady problem has no lead time to split")
            self._feedback = feedback_pairs(spec["inputs"], spec["outputs"], spec.get("roles"))
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

    def loss_fn(self, pred, y, mask, weight=None) -> torch.Tensor:
        """The configured loss over scored channels; ``weight`` [B, 1, *S] (0 = an unscored point) if given."""
        kind = self.hparams.loss
        if weight is not None:
            pred, y = pred * weight, y * weight
        if kind == "mse":
            w = mask.view(*mask.shape, *([1] * (pred.ndim - 2))).to(pred.dtype)
            points = pred[0, 0].numel() if weight is None else weight.flatten(1).sum(1).mean()
            return ((pred - y) ** 2 * w).sum() / (w.sum() * points).clamp_min(1)
        err = group_relative_error(pred, y, mask, self._groups(y.shape[1]), p=1 if kind == "rel_l1" else 2)
        return err.nanmean()

    # ---- the training recipe -----------------------------------------------------------------
    def _jitter(self, x, y):
        """Shift the grid under the patch grid: per spatial axis a random 0..patch_jitter cells, a roll where the
        axis is periodic, else a shift whose fill is masked out of the loss. Returns x, y and the weight (or None)."""
        n_max = self.hparams.patch_jitter
        spatial = list(range(2, x.ndim))
        shifts = torch.randint(0, n_max + 1, (len(spatial),)).tolist()  # host RNG: no device sync
        bcs = (self.hparams.data_spec or {}).get("boundary_conditions") or {}
        axes = list(bcs)  # the spec's axis order is the grid's
        weight = None
        for d, s in zip(spatial, shifts):
            if s == 0:
                continue
            periodic = d - 2 < len(axes) and bcs[axes[d - 2]] == "periodic"
            x, y = x.roll(s, d), y.roll(s, d)
            if not periodic:  # the rolled-in band is padding: zero input, never scored
                band = torch.ones(x.shape[d], device=x.device, dtype=x.dtype)
                band[:s] = 0
                shape = [1] * x.ndim
                shape[d] = -1
                band = band.view(shape)
                x = x * band
                weight = band if weight is None else weight * band
        if weight is not None:
            weight = weight.expand(1, 1, *x.shape[2:])
        return x, y, weight

    def _add_noise(self, x):
        """Gaussian noise of std ``input_noise`` on the input channels that hold the predicted states."""
        fed = sorted({i for i in self.persist_index if i is not None})
        if not fed:
            return x
        noise = torch.zeros_like(x)
        noise[:, fed] = torch.randn_like(x[:, fed]) * self.hparams.input_noise
        return x + noise

    def predict_pair(self, x, t, mask):
        """The model's prediction of a pair's target, in ``pushforward`` chained sub-steps when training."""
        steps = self.hparams.pushforward if self.training else 1
        if steps == 1 or self._feedback is None:
            return self.model(x, t)
        return pushforward(self.model, x, t, steps, self._feedback, grad="last", mask=mask)

    def step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch["x"], batch["y"]
        mask = batch.get("mask", torch.ones(y.shape[:2], device=y.device))
        t = batch.get("t")
        hp, weight = self.hparams, None
        if stage == "train":
            if hp.patch_jitter:
                x, y, weight = self._jitter(x, y)
            if hp.input_noise:
                x = self._add_noise(x)
        pred = self.predict_pair(x, t, mask)
        if hp.target == "delta":  # the loss on increments, in units of each field's typical step
            loss = self.loss_fn(increments(self.model, x, pred), increments(self.model, x, y), mask, weight)
        else:
            loss = self.loss_fn(pred, y, mask, weight)
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
