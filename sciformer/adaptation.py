"""Adapting a pretrained model to a data set with other variables, and choosing what it trains.

Everything here reads the family's spec (``sciformer.models.spec``); no parameter name of any family appears.

Variables are matched by name (DECISIONS): a slice of a channel-carrying tensor is reused only when the target
data has a variable of the same name; every other slice keeps its fresh initialisation, and every tensor that
does not carry channels is copied when its shape agrees. The report lists which tensors were copied, copied
slice by slice, or re-initialised. Normalisation statistics travel with the checkpoint (``merged_stats``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from sciformer.checkpoints import Checkpoint
from sciformer.errors import CheckpointError, SciformerError
from sciformer.models.spec import ChannelTensors, spec_of
from sciformer.nn.lora import apply_lora

log = logging.getLogger(__name__)

MODES = ("full", "frozen-latent", "lora")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise SciformerError(f"fine-tuning mode {mode!r} is not one of {', '.join(MODES)}")
    return mode


def merged_stats(pretrained_spec: dict[str, Any], target_stats: dict[str, Any]) -> dict[str, Any]:
    """Checkpoint statistics for variables it knows, the target store's for new ones."""
    known = (pretrained_spec or {}).get("stats", {})
    return {name: known.get(name, s) for name, s in target_stats.items()}


def _pairs(old: list[str], new: list[str], extras: int) -> list[tuple[int, int]]:
    """(new index, old index) of the variables both sides name, then of the non-variable channels after them."""
    pairs = [(j, old.index(n)) for j, n in enumerate(new) if n in old]
    return pairs + [(len(new) + k, len(old) + k) for k in range(extras)]


def _copy_slices(fresh: torch.Tensor, old: torch.Tensor, dims: tuple[int, ...], pairs: list[tuple[int, int]]):
    """``fresh`` with ``old``'s slices copied for the index pairs along every dim of ``dims``."""
    out = fresh.clone()
    if len(dims) == 1:
        (d,) = dims
        for j, i in pairs:
            out.select(d, j).copy_(old.select(d, i))
        return out
    d0, d1 = dims  # both dims index the same variables (an output-to-output mixing conv)
    for j0, i0 in pairs:
        for j1, i1 in pairs:
            out.select(d0, j0).select(d1 - 1, j1).copy_(old.select(d0, i0).select(d1 - 1, i1))
    return out


def _extras(decl: ChannelTensors, fresh: torch.Tensor, old: torch.Tensor, n_new: int, n_old: int) -> int | None:
    """How many non-variable channels follow the variables along the declared dims (None: the shapes do not
    fit the variable counts, or another dim disagrees)."""
    if fresh.ndim != old.ndim or any(fresh.shape[d] != old.shape[d] for d in range(fresh.ndim) if d not in decl.dims):
        return None
    extras = {fresh.shape[d] - n_new for d in decl.dims} | {old.shape[d] - n_old for d in decl.dims}
    if len(extras) != 1 or min(extras) < 0 or (min(extras) > 0 and not decl.extras):
        return None
    return extras.pop()


def adapt(ckpt: Checkpoint, target_spec: dict[str, Any], mode: str = "full", lora_rank: int = 8,
          **config_overrides) -> tuple[nn.Module, dict[str, list[str]]]:
    """The checkpoint's architecture built for ``target_spec``'s variables (``config_overrides``: the channel
    counts the task derives from the data), filled from the checkpoint by name, set up for ``mode``."""
    check_mode(mode)
    old_dims = (ckpt.data_spec or {}).get("spatial_shape")
    new_dims = target_spec.get("spatial_shape")
    if old_dims and new_dims and len(old_dims) != len(new_dims):
        raise CheckpointError(f"{ckpt.path}: pretrained on {len(old_dims)}D grids, the data is {len(new_dims)}D; "
                              "choose a checkpoint of the same dimensionality")
    spec = ckpt.spec
    source = ckpt.build().state_dict()  # the trained weights, a LoRA fine-tune merged
    model = ckpt.fresh_twin(**config_overrides)
    report: dict[str, list[str]] = {"copied": [], "copied_by_channel": [], "reinitialised": [], "dropped": []}
    state = {}
    for name, fresh in model.state_dict().items():
        old, decl = source.get(name), spec.channel_tensor(name)
        if old is None:
            state[name] = fresh
            report["reinitialised"].append(name)
        elif decl is not None:
            old_names = list(ckpt.data_spec.get(decl.side) or [])
            new_names = list(target_spec.get(decl.side) or [])
            extras = _extras(decl, fresh, old, len(new_names), len(old_names)) if old_names and new_names else None
            pairs = _pairs(old_names, new_names, extras) if extras is not None else []
            if pairs:
                state[name] = _copy_slices(fresh, old, decl.dims, pairs)
                report["copied" if old_names == new_names else "copied_by_channel"].append(name)
            else:  # no shared variable, or variables unnamed on one side: never matched by position
                state[name] = fresh
                report["reinitialised"].append(name)
        elif old.shape == fresh.shape:
            state[name] = old
            report["copied"].append(name)
        else:
            state[name] = fresh
            report["reinitialised"].append(name)
    report["dropped"] = sorted(set(source) - set(state))
    model.load_state_dict(state)
    report.update(set_trainable(model, mode, lora_rank))
    log.info("adapted %s: %d tensors copied, %d copied by variable name (%s), %d re-initialised (%s)",
             ckpt.path, len(report["copied"]), len(report["copied_by_channel"]), ", ".join(report["copied_by_channel"]),
             len(report["reinitialised"]), ", ".join(report["reinitialised"]))
    return model, report


def set_trainable(model: nn.Module, mode: str, lora_rank: int = 8) -> dict[str, list[str]]:
    """``full``: everything trains. ``frozen-latent``: only the spec's adapters (embedding, recovery, heads).
    ``lora``: the adapters plus rank-``lora_rank`` updates of the spec's LoRA targets, whose weights freeze."""
    check_mode(mode)
    spec = spec_of(model)
    lora: list[str] = []
    for name, p in model.named_parameters():
        p.requires_grad_(mode == "full" or spec.is_adapter(name))
    if mode == "lora":
        lora = apply_lora(model, spec.lora_targets, rank=lora_rank)
        if not lora:
            raise CheckpointError(f"{type(model).__name__}: its spec's LoRA targets match no layer; use --mode full")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise CheckpointError(f"{type(model).__name__}: mode {mode!r} leaves nothing to train (its spec names no "
                              "adapters); use --mode full")
    return {"trainable": trainable, "lora": lora}


def lr_patterns(model: nn.Module, rates: dict[str, float | None]) -> dict[str, float]:
    """``{parameter pattern: lr}`` for the spec's named LR groups given a rate (groups the family lacks are
    skipped: FNO has no separate time conditioning)."""
    groups = spec_of(model).lr_groups
    return {groups[g]: lr for g, lr in rates.items() if lr is not None and g in groups}

