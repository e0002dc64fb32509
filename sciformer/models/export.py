"""Exported models: ``model.safetensors`` + ``config.json``. Loading never unpickles anything."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sciformer.errors import CheckpointError
from sciformer.io import atomic_path, write_json
from sciformer.models.registry import model_class

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


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of an export directory, with clear errors for a wrong path or file."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory; expected an export with model.safetensors + config.json")
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: no config.json; write one with `sciformer export CKPT {path}`")
    try:
        meta = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_file}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Build the model described by ``path/config.json`` and fill it from ``path/model.safetensors``."""
    path = Path(path)
    meta = read_config(path)
    cls = model_class(meta["class"])
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    cfg = cls.config_class(**{k: v for k, v in meta["config"].items() if k in fields})
    model = cls(cfg)
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{path}: no model.safetensors")
    try:
        state = load_file(weights, device=str(map_location))
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(f"{weights}: unreadable safetensors file ({e}); re-export it") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: does not match {cls.__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model.eval()
