"""Training plumbing shared by every task: AdamW, warmup + cosine, parameter groups, exact resume.

A task wraps a registered model (``model`` is a registry name, ``model_options`` its overrides) so a
checkpoint's hyper-parameters are enough to rebuild the network (`sciformer export`). ``data_spec`` is
linked from the DataModule by the CLI (channels, variable names, normalisation statistics) and is saved
with the checkpoint, so the statistics travel with the weights.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import lightning as L
import torch
from torch import nn

from sciformer import checkpoints, models, parallel
from sciformer.adaptation import adapt, check_mode
from sciformer.errors import CheckpointError, ConfigError
from sciformer.kernels import keep_freed_memory
from sciformer.models.spec import spec_of
from sciformer.nn.lora import lora_description


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup from 0 over ``warmup`` steps, then cosine decay to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class BaseTask(L.LightningModule):
    """Base LightningModule. Subclasses implement ``build_model`` (optional) and ``step``.

    Args:
        model: registered model name (``sciformer.models.names()``).
        model_options: overrides of that model's config (e.g. ``{in_channels: 4}``).
        lr: peak learning rate of AdamW.
        weight_decay: decoupled weight decay (not applied to norms, biases, embeddings).
        betas: AdamW betas.
        warmup_steps: linear warmup steps.
        min_lr_ratio: final LR as a fraction of ``lr`` at the end of the cosine.
        lr_groups: optional ``{regex: lr}``; parameters whose name matches get that LR (first match wins).
        data_spec: filled by the CLI from the DataModule; kept in the checkpoint.
        pretrained: a checkpoint (.ckpt) or export directory to start from; its architecture is used and its
            channels are adapted to ``data_spec`` by variable name (``sciformer.adaptation.adapt``).
        finetune_mode: "full" | "frozen-latent" | "lora" (with ``pretrained``).
        lora_rank: rank of the LoRA updates (mode "lora").
        compile: "none" | "model" (the whole forward, one graph) | "blocks" (each block of the family's spec);
            ``torch.compile(fullgraph=True, dynamic=False)`` with a persistent cache (``sciformer.parallel``).
        cudagraphs: capture CUDA graphs of the compiled code (reduce-overhead mode; CUDA, static shapes, no FSDP2).
        activation_checkpointing: recompute each block's forward in the backward pass (less activation memory).

    Under Lightning's ``ModelParallelStrategy`` the model is sharded with FSDP2 per block, then at the root
    (``configure_model``); ``bf16-mixed`` then gathers bf16 parameters and reduces gradients in fp32.
    """

    def __init__(
        self,
        model: str | None = None,
        model_options: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        lr_groups: dict[str, float] | None = None,
        data_spec: dict[str, Any] | None = None,
        pretrained: str | None = None,
        finetune_mode: str = "full",
        lora_rank: int = 8,
        compile: str = "none",
        cudagraphs: bool = False,
        activation_checkpointing: bool = False,
    ):
        parallel.check_options(compile, cudagraphs, activation_checkpointing)
        super().__init__()
        self.save_hyperparameters()
        self.model = self.build_model()

    # ---- model ---------------------------------------------------------------------------------
    def model_overrides(self) -> dict[str, Any]:
        """Model options derived from ``data_spec`` (e.g. channel counts); subclasses extend this."""
        return {}

    def build_model(self) -> nn.Module:
        hp, from_data = self.hparams, self.model_overrides()
        if hp.pretrained:  # the checkpoint's architecture; only what its spec sizes by the data follows the data
            ck = checkpoints.read(hp.pretrained)
            from_data = {k: v for k, v in from_data.items() if k in ck.spec.sized_by_data}
            model, self.adaptation = adapt(ck, hp.data_spec or {}, mode=hp.finetune_mode, lora_rank=hp.lora_rank,
                                           **{**from_data, **(hp.model_options or {})})
            return model
        if not hp.model:
            raise CheckpointError("set `model` (a registered name, see `sciformer info`) or `pretrained`")
        if check_mode(hp.finetune_mode) != "full":
            raise CheckpointError(f"finetune_mode {hp.finetune_mode!r} needs `pretrained` (a checkpoint to start from)")
        return models.get(hp.model, **{**from_data, **(hp.model_options or {})})

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def configure_model(self) -> None:
        """FSDP2 under ``ModelParallelStrategy``, activation checkpointing and compilation of ``self.model``,
        applied once (Lightning calls this hook for every fit/validate/test) by ``sciformer.parallel``. On CPU
        the process also keeps freed memory (``sciformer.kernels.keep_freed_memory``): otherwise glibc hands
        every large activation back to the OS after the backward pass and the next step page-faults it anew."""
        from lightning.pytorch.strategies import ModelParallelStrategy

        from sciformer.precision import BF16MasterWeights

        hp = self.hparams
        strategy = self.trainer.strategy
        if strategy.root_device.type == "cpu":
            keep_freed_memory()
        fsdp = isinstance(strategy, ModelParallelStrategy)
        if fsdp and isinstance(self.trainer.precision_plugin, BF16MasterWeights):
            raise ConfigError("BF16MasterWeights with FSDP2 (ModelParallelStrategy): use --trainer.precision "
                              "bf16-mixed, whose FSDP2 policy already gathers bf16 parameters from fp32 shards")
        if not fsdp and hp.compile == "none" and not hp.activation_checkpointing:
            return
        if fsdp:  # only the wrapped network is sharded; its gradients are the only ones FSDP2 reduces
            stray = [n for n, p in self.named_parameters() if p.requires_grad and not n.startswith("model.")]
            if stray:
                raise ConfigError(f"{type(self).__name__} trains parameters outside its model ({stray[:3]}), "
                                  "which FSDP2 would not synchronise; use strategy ddp")
        parallel.parallelize(self.model, mesh=self.device_mesh if fsdp else None, precision=str(self.trainer.precision),
                             compile=hp.compile, cudagraphs=hp.cudagraphs,
                             activation_checkpointing=hp.activation_checkpointing,
                             device_type=strategy.root_device.type)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.hparams.get("cudagraphs"):  # a new step: the previous step's graph outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()

    # ---- steps ---------------------------------------------------------------------------------
    def step(self, batch: Any, stage: str) -> torch.Tensor:
        """Compute and log the loss of one batch for ``stage`` in {"train", "val", "test"}."""
        raise NotImplementedError(f"{type(self).__name__} must implement step()")

    def training_step(self, batch, batch_idx):
        return self.step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self.step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self.step(batch, "test")

    # ---- optimisation --------------------------------------------------------------------------
    def lr_patterns(self) -> dict[str, float]:
        """``{regex: lr}`` for parameter names with their own learning rate (first match wins)."""
        return dict(self.hparams.lr_groups or {})

    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: (LR group) × (decay / no decay); empty groups dropped."""
        hp = self.hparams
        patterns = [(re.compile(p), lr) for p, lr in self.lr_patterns().items()]
        spec = spec_of(self.model)
        groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            lr = next((lr for pat, lr in patterns if pat.search(name)), hp.lr)
            decay = spec.takes_weight_decay(name, p.ndim)
            groups.setdefault((lr, decay), []).append(p)
        return [
            {"params": ps, "lr": lr, "weight_decay": hp.weight_decay if decay else 0.0}
            for (lr, decay), ps in groups.items()
        ]

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.param_groups(), lr=hp.lr, betas=tuple(hp.betas))
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 0
        total = int(total) if math.isfinite(total) else 0
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, hp.warmup_steps, total, hp.min_lr_ratio)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # RNG states make a resumed run draw the same dropout masks / noise as an uninterrupted one.
        checkpoint["sciformer_rng"] = {"torch": torch.get_rng_state()}
        checkpoint["sciformer_task"] = type(self).__name__
        checkpoint["sciformer_model"] = {
            "class": parallel.family_class(self.model).__name__,  # not FSDP2's FSDP<class>
            "config": dataclasses.asdict(self.model.config),
            "lora": lora_description(self.model),  # None, or what `sciformer export` needs to merge the updates
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        theirs = checkpoint.get("hyper_parameters", {}).get("model")
        if theirs is not None and theirs != self.hparams.model:
            raise CheckpointError(
                f"checkpoint holds model {theirs!r} but this run builds {self.hparams.model!r}; "
                f"use the checkpoint's config, or `sciformer finetune` to adapt it"
            )
        theirs_cls = checkpoint.get("sciformer_task")
        if theirs_cls is not None and theirs_cls != type(self).__name__:
            raise CheckpointError(f"checkpoint is a {theirs_cls}, this run is a {type(self).__name__}")
        ours_spec = self.hparams.get("data_spec") or {}
        theirs_spec = checkpoint.get("hyper_parameters", {}).get("data_spec") or {}
        for key in ("inputs", "outputs"):  # variables are matched by name, never by shape
            if key in ours_spec and key in theirs_spec and list(ours_spec[key]) != list(theirs_spec[key]):
                raise CheckpointError(
                    f"checkpoint was trained with {key} {list(theirs_spec[key])} but this run's data has "
                    f"{list(ours_spec[key])}; train on the same variables, or adapt it with `sciformer finetune`")
        ours = self.state_dict()
        shapes = [f"{k}: {tuple(v.shape)} vs {tuple(ours[k].shape)}" for k, v in checkpoint.get("state_dict", {}).items()
                  if k in ours and hasattr(v, "shape") and tuple(v.shape) != tuple(ours[k].shape)]
        if shapes:
            raise CheckpointError(f"checkpoint weights do not fit this run's model (checkpoint vs run: {shapes[:3]}); "
                                  "use the checkpoint's model and model_options, or `sciformer finetune` to adapt it")
        rng = checkpoint.get("sciformer_rng")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
