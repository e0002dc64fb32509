"""Writing exported models: ``model.safetensors`` + ``config.json`` (``sciformer.checkpoints`` reads them)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from sciformer.errors import CheckpointError
from sciformer.io import atomic_path, write_json

FORMAT = "sciformer-model/1"


def save(model: nn.Module, out: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``out/model.safetensors`` and ``out/config.json`` atomically (the directory appears complete)."""
    cfg = getattr(model, "config", None)
    if cfg is None or not dataclasses.is_dataclass(cfg):
        raise CheckpointError(f"{type(model).__name__} has no dataclass `config`; cannot export it")
    out = Path(out)
    with atomic_path(out, is_dir=True) as tmp:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(_untie(state), tmp / "model.safetensors", metadata={"format": FORMAT})
        write_json(
            tmp / "config.json",
            {"format": FORMAT, "class": type(model).__name__, "config": dataclasses.asdict(cfg), **(extra or {})},
        )
    return out


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage: give tied tensors their own copy."""
    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out
