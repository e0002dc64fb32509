"""Reading Lightning checkpoints safely (``weights_only=True``) and exporting them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from sciformer import models
from sciformer.errors import CheckpointError


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a Lightning checkpoint without unpickling code; clear errors for missing/corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if "state_dict" not in ckpt or "sciformer_model" not in ckpt:
        raise CheckpointError(f"{path}: not a sciformer training checkpoint (no model description inside)")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the network of a task checkpoint and load its weights."""
    desc = ckpt["sciformer_model"]
    cls = models.model_class(desc["class"])
    model = cls(cls.config_class(**desc["config"]))
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model


def export_checkpoint(ckpt_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    ckpt = read_checkpoint(ckpt_path)
    model = model_from_checkpoint(ckpt)
    hp = ckpt.get("hyper_parameters", {})
    extra = {"task": ckpt.get("sciformer_task"), "data_spec": hp.get("data_spec"), "model_name": hp.get("model")}
    return models.save(model, out, extra=extra)
