"""The one place that reads saved models, whatever wrote them, and rebuilds them.

Sources: a Lightning training checkpoint (``.ckpt``, read with ``weights_only=True``), an export directory
(``sciformer export``: ``model.safetensors`` + ``config.json``; local, or ``hf://org/name`` on the Hub) and a
converted Poseidon directory (``sciformer convert poseidon``: an export whose ``config.json`` names its upstream
source). ``read`` gives a ``Checkpoint``: the model's class, config, weights and the data spec it was trained
on, from which it builds the trained model (``build``, LoRA updates merged) or a *fresh twin* of the same
architecture (``fresh_twin``: the scratch baseline of any source). Every command reads checkpoints here, so
every command fails the same way: one ``CheckpointError`` naming the file and what to do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sciformer.errors import CheckpointError, SciformerError
from sciformer.models.export import FORMAT, save
from sciformer.models.registry import model_class
from sciformer.models.spec import FamilySpec, spec_of
from sciformer.nn.delta import attach_delta
from sciformer.nn.lora import apply_lora, merge_lora

SOURCES = ("ckpt", "export", "poseidon")


@dataclass
class Checkpoint:
    """A saved model as plain data. ``state`` holds the network's tensors (unmerged LoRA updates included when
    ``lora`` is set); ``task_state`` the whole Lightning state dict (tasks with more than one network)."""

    path: str
    source: str  # one of SOURCES
    model_class: str
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    data_spec: dict[str, Any] = field(default_factory=dict)
    model_name: str | None = None  # the registered size it was built from, if known
    task: str | None = None
    lora: dict[str, Any] | None = None  # {"rank", "alpha", "targets"}
    hparams: dict[str, Any] = field(default_factory=dict)
    task_state: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def cls(self) -> type[nn.Module]:
        try:
            return model_class(self.model_class)
        except SciformerError:
            raise CheckpointError(f"{self.path}: holds a {self.model_class!r} model, which this version of "
                                  "sciformer does not know") from None

    @property
    def spec(self) -> FamilySpec:
        return spec_of(self.cls)

    @property
    def kind(self) -> str:
        return self.spec.kind

    def architecture(self) -> dict[str, Any]:
        """The saved config without the fields the data decides (channel counts, number of targets)."""
        return {k: v for k, v in self.config.items() if k not in self.spec.sized_by_data}

    def twin(self) -> tuple[str, dict[str, Any]]:
        """(model, model_options) that make a task build the fresh twin (channel counts from its data)."""
        return self.model_class, self.architecture()

    def fresh_twin(self, **overrides: Any) -> nn.Module:
        """The same architecture, freshly initialised: the scratch baseline of any source."""
        cls = self.cls
        names = {f.name for f in dataclasses.fields(cls.config_class)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise CheckpointError(f"{self.path}: {cls.__name__} has no option(s) {unknown}; valid: {sorted(names)}")
        # keys a later version dropped are ignored; every remaining one must build
        cfg = {k: v for k, v in self.config.items() if k in names} | overrides
        try:
            return cls(cls.config_class(**cfg))
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{self.path}: its config does not build a {cls.__name__} ({e})") from None

    def build(self) -> nn.Module:
        """The saved network with its weights, LoRA updates merged, in eval mode."""
        model = self.fresh_twin()
        if self.lora:
            targets = "^(" + "|".join(map(re.escape, self.lora["targets"])) + ")$"
            apply_lora(model, targets, rank=self.lora["rank"], alpha=self.lora["alpha"])
        ours = model.state_dict()
        missing = sorted(set(ours) - set(self.state))
        unexpected = sorted(set(self.state) - set(ours))
        shapes = [f"{k}: {tuple(v.shape)} vs {tuple(ours[k].shape)}" for k, v in self.state.items()
                  if k in ours and v.shape != ours[k].shape]
        if missing or unexpected or shapes:
            raise CheckpointError(
                f"{self.path}: the weights do not fit the {self.model_class} its config describes (missing "
                f"{missing[:4]}, unexpected {unexpected[:4]}, shapes {shapes[:3]}); the file was written by another "
                "model or edited: re-export it with `sciformer export CKPT OUT`")
        model.load_state_dict(self.state)
        merge_lora(model)
        if self.data_spec.get("target") == "delta":  # trained on increments: it returns states again
            attach_delta(model, self.data_spec)
        return model.eval()


def read(path: str | os.PathLike, kind: str | None = None) -> Checkpoint:
    """Read any checkpoint source; ``kind`` ("operator", "series", ...) refuses a model of another kind.
    ``hf://org/name[@revision]`` is an export on the Hugging Face Hub, fetched into its cache (``sciformer.hub``)."""
    if str(path).startswith("hf:/"):  # "hf://" (a Path collapses it to "hf:/")
        from sciformer import hub

        path = hub.resolve(str(path))
    p = Path(path)
    if p.is_dir() and (p / "meta.pt").is_file():  # a sharded (FSDP2) Lightning checkpoint: a DCP directory
        ck = _read_lightning(p, _read_sharded(p))
    elif p.is_dir():
        ck = _read_export(p)
    elif p.is_file():
        ck = _read_lightning(p)
    else:
        raise CheckpointError(f"{p}: no such checkpoint; give a .ckpt file written by `sciformer fit` or a "
                              "directory written by `sciformer export` / `sciformer convert`")
    if kind is not None and ck.kind != kind:
        article = "an" if ck.kind[0] in "aeiou" else "a"
        raise CheckpointError(f"{p}: holds a {ck.model_class} ({article} {ck.kind} model); this command needs a "
                              f"model of kind {kind!r}")
    return ck


def load_model(path: str | os.PathLike, kind: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model (eval mode, LoRA merged) and the data spec it was trained on."""
    ck = read(path, kind)
    return ck.build(), dict(ck.data_spec)


def _read_sharded(path: Path) -> dict[str, Any]:
    """The full checkpoint of a sharded one (``ModelParallelStrategy``): ``meta.pt`` (everything but the tensors)
    plus the model's state dict gathered from the DCP shards, in this process (the optimizer state is not read)."""
    import warnings

    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    try:
        raw = torch.load(path / "meta.pt", map_location="cpu", weights_only=True)
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            raw["state_dict"] = _load_state_dict_from_keys("state_dict", checkpoint_id=path)["state_dict"]
    except Exception as e:  # a missing shard, a truncated file
        raise CheckpointError(f"{path}: cannot read this sharded checkpoint ({type(e).__name__}: {str(e)[:160]}); "
                              "it is incomplete or corrupt: use another checkpoint of the run") from None
    return raw


def _read_lightning(path: Path, raw: dict[str, Any] | None = None) -> Checkpoint:
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True) if raw is None else raw
    except Exception as e:  # truncated zip, pickle of code, not a torch file at all
        raise CheckpointError(f"{path}: cannot read this checkpoint ({type(e).__name__}: {str(e)[:160]}); "
                              "it is corrupt, truncated or not a PyTorch file") from None
    if not isinstance(raw, dict) or "state_dict" not in raw or "sciformer_model" not in raw:
        raise CheckpointError(f"{path}: not a sciformer training checkpoint (no model description inside); "
                              "train with `sciformer fit`, or pass an export directory")
    desc, hp = raw["sciformer_model"], raw.get("hyper_parameters", {})
    state = {k[len("model."):]: v for k, v in raw["state_dict"].items() if k.startswith("model.")}
    return Checkpoint(str(path), "ckpt", desc["class"], dict(desc["config"]), state, dict(hp.get("data_spec") or {}),
                      hp.get("model"), raw.get("sciformer_task"), desc.get("lora"), dict(hp), raw["state_dict"])


def _read_config(path: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of an export directory."""
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: no config.json; an export directory holds model.safetensors + config.json "
                              f"(write one with `sciformer export CKPT {path}`)")
    try:
        meta = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({e}); re-export the model") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{cfg_file}: format {got!r}, expected {FORMAT!r}; for an upstream Poseidon "
                              "directory run `sciformer convert poseidon SRC OUT` first")
    return meta


def _read_export(path: Path) -> Checkpoint:
    from safetensors.torch import load_file

    meta = _read_config(path)
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{path}: no model.safetensors beside config.json; re-export the model")
    try:
        state = load_file(weights)
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(f"{weights}: unreadable safetensors file ({str(e)[:160]}); re-export it") from None
    origin = meta.get("source")
    source = "poseidon" if isinstance(origin, dict) and origin.get("format") == "poseidon" else "export"
    return Checkpoint(str(path), source, meta["class"], dict(meta["config"]), state, dict(meta.get("data_spec") or {}),
                      meta.get("model_name"), meta.get("task"))


def export_checkpoint(ckpt_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write any checkpoint as an export directory (LoRA merged; the data spec and size name kept)."""
    ck = read(ckpt_path)
    extra = {"task": ck.task, "data_spec": ck.data_spec or None, "model_name": ck.model_name}
    return save(ck.build(), out, extra=extra)
