"""A Poseidon (HF Swinv2 naming) state dict from one of our ScOT models: the inverse of
``sciformer.models.poseidon_convert.convert_state_dict``, so tests can write small upstream checkpoints without
``transformers``. Tests check the round trip before relying on it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from safetensors.torch import save_file

from sciformer.models.poseidon_convert import config_from_poseidon
from sciformer.models.scot import ScOT, ScOTConfig
from sciformer.nn.conditional_norm import TimeConditionedLayerNorm

_REVERSE = [
    (r"^embeddings\.proj\.", "embeddings.patch_embeddings.projection."),
    (r"^(encoder|decoder)\.(\d+)\.", r"\1.layers.\2."),
    (r"\.attn\.cpb_mlp\.", ".attention.self.continuous_position_bias_mlp."),
    (r"\.attn\.logit_scale$", ".attention.self.logit_scale"),
    (r"\.attn\.q_bias$", ".attention.self.query.bias"),
    (r"\.attn\.v_bias$", ".attention.self.value.bias"),
    (r"\.attn\.proj\.", ".attention.output.dense."),
    (r"\.fc1\.", ".intermediate.dense."),
    (r"(blocks\.\d+)\.fc2\.", r"\1.output.dense."),
    (r"\.norm1(\.|$)", r".layernorm_before\1"),
    (r"\.norm2(\.|$)", r".layernorm_after\1"),
    (r"^skips\.(\d+)\.(\d+)\.gamma$", r"residual_blocks.\1.\2.weight"),
    (r"^skips\.", "residual_blocks."),
]
_NORM_PARTS = {"weight_t": "weight.weight", "weight": "weight.bias", "bias_t": "bias.weight", "bias": "bias.bias"}


def _upstream_name(name: str) -> str:
    for pattern, repl in _REVERSE:
        name = re.sub(pattern, repl, name)
    return name


def upstream_state(model: ScOT) -> dict:
    norms = {n for n, m in model.named_modules() if isinstance(m, TimeConditionedLayerNorm)}
    out = {}
    for name, t in model.state_dict().items():
        base, _, leaf = name.rpartition(".")
        if base in norms:
            t = t.reshape(-1, 1) if leaf.endswith("_t") else t  # Linear(1, C) weights are [C, 1]
            out[f"{_upstream_name(base)}.{_NORM_PARTS[leaf]}"] = t.clone()
        elif name.endswith(".attn.qkv.weight"):
            prefix = _upstream_name(name[: -len(".attn.qkv.weight")])
            for part, w in zip(("query", "key", "value"), t.chunk(3)):
                out[f"{prefix}.attention.self.{part}.weight"] = w.clone()
        else:
            out[_upstream_name(name)] = t.clone()
    return out


def write_upstream(path: Path, up_config: dict, seed: int = 0) -> ScOT:
    """An upstream Poseidon directory (config.json + model.safetensors) of a randomly initialised model."""
    import torch

    torch.manual_seed(seed)
    model = ScOT(ScOTConfig(**config_from_poseidon(up_config)))
    with torch.no_grad():  # not the init's constants: every tensor distinct, so a wrong mapping shows
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(up_config))
    save_file(upstream_state(model), path / "model.safetensors")
    return model
