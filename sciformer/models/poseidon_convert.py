"""``sciformer convert poseidon SRC OUT``: a released Poseidon/scOT checkpoint -> a sciformer export.

SRC is an upstream directory (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``, the latter read
with ``weights_only=True``) or a Hugging Face Hub id (``camlab-ethz/Poseidon-T``, ``hf://org/name@revision``),
fetched into the Hub cache by ``sciformer.hub`` (safetensors preferred; HF_HOME, HF_HUB_OFFLINE, tokens apply).
Every upstream tensor is mapped onto ``sciformer.models.scot.ScOT``; a key that maps nowhere, a parameter left
unfilled or a shape that differs is a CheckpointError naming it. The output folder gets a model card
(``sciformer.model_card``), so it is Hub-ready. The export
(``sciformer.models.load(OUT)``) carries Poseidon's variable names and normalisation constants
(shared/anchors/poseidon.md §2.2) as its ``data_spec``, so fine-tuning keeps them for the variables it knows.

Key mapping (upstream -> ours):
    embeddings.patch_embeddings.projection.*        -> embeddings.proj.*
    encoder.layers.i / decoder.layers.k             -> encoder.i / decoder.k   (decoder deepest first, both)
    blocks.j.attention.self.{query,key,value}.weight -> blocks.j.attn.qkv.weight (concatenated q, k, v)
    blocks.j.attention.self.{query,value}.bias      -> blocks.j.attn.{q_bias,v_bias}
    blocks.j.attention.self.logit_scale / continuous_position_bias_mlp.* -> attn.logit_scale / attn.cpb_mlp.*
    blocks.j.attention.output.dense / intermediate.dense / output.dense -> attn.proj / fc1 / fc2
    blocks.j.layernorm_before / layernorm_after      -> blocks.j.norm1 / norm2
    residual_blocks.i.j.weight (layer scale)         -> skips.i.j.gamma   (other names unchanged)
    <norm>.weight.weight [C,1] / .weight.bias / .bias.weight [C,1] / .bias.bias
                                                     -> <norm>.weight_t / .weight / .bias_t / .bias
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import torch

from sciformer.errors import CheckpointError

# Poseidon's pretrained models are 4→4 [rho, u, v, p] (HF model cards); constants from fluids/normalization_constants.py.
POSEIDON_VARIABLES = ["rho", "u", "v", "p"]
POSEIDON_STATS = {"rho": {"mean": 0.80, "std": 0.31}, "u": {"mean": 0.0, "std": 0.391},
                  "v": {"mean": 0.0, "std": 0.356}, "p": {"mean": 0.0, "std": 0.185}}
POSEIDON_CONSTANTS = {
    "stats": POSEIDON_STATS,
    "tracer": {"mean": 0.19586183, "std": 0.37},
    "time_constant": 20,  # upstream lead time = (t2 − t1) / 20 over 21 snapshots = sciformer's t over the span
    "pressure_offsets": {"CE-Gauss": 2.513, "CE-KH": 1.0, "CE-RP": 0.215, "CE-CRP": 0.553, "CE-RPUI": 1.33},
    "errors": "Poseidon reports median relative L1 (%) on z-normalised fields",
}

_RENAMES = [  # applied in order to every upstream name (after the norm and q/k/v special cases)
    (r"^embeddings\.patch_embeddings\.projection\.", "embeddings.proj."),
    (r"^(encoder|decoder)\.layers\.(\d+)\.", r"\1.\2."),
    (r"\.attention\.self\.continuous_position_bias_mlp\.", ".attn.cpb_mlp."),
    (r"\.attention\.self\.logit_scale$", ".attn.logit_scale"),
    (r"\.attention\.self\.query\.bias$", ".attn.q_bias"),
    (r"\.attention\.self\.value\.bias$", ".attn.v_bias"),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.intermediate\.dense\.", ".fc1."),
    (r"(blocks\.\d+)\.output\.dense\.", r"\1.fc2."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"^residual_blocks\.(\d+)\.(\d+)\.weight$", r"skips.\1.\2.gamma"),
    (r"^residual_blocks\.", "skips."),
]
_QKV = re.compile(r"^(.*)\.attention\.self\.(query|key|value)\.weight$")
_COND_NORM = re.compile(r"^(.*(?:norm|layernorm_before|layernorm_after))\.(weight|bias)\.(weight|bias)$")


def config_from_poseidon(up: dict[str, Any]) -> dict[str, Any]:
    """ScOTConfig fields from an upstream ``config.json`` (clear errors for variants we do not implement)."""
    if up.get("residual_model", "convnext") != "convnext":
        raise CheckpointError(f"residual_model={up['residual_model']!r}: only Poseidon's 'convnext' skips are "
                              "supported")
    if up.get("use_absolute_embeddings", False):
        raise CheckpointError("use_absolute_embeddings=True is not supported (Poseidon's released models do not "
                              "use it)")
    missing = [k for k in ("num_channels", "num_out_channels", "embed_dim", "depths", "num_heads") if k not in up]
    if missing:
        raise CheckpointError(f"config.json lacks {missing}; is this a Poseidon/scOT checkpoint?")
    cond = bool(up.get("use_conditioning", False))
    skips = up.get("skip_connections", [2, 2, 2, 0])
    return {
        "in_channels": int(up["num_channels"]), "out_channels": int(up["num_out_channels"]),
        "image_size": up.get("image_size", 128), "patch_size": int(up.get("patch_size", 4)),
        "embed_dim": int(up["embed_dim"]), "depths": [int(d) for d in up["depths"]],
        "num_heads": [int(h) for h in up["num_heads"]], "skip_blocks": [int(s) for s in skips],
        "window_size": int(up.get("window_size", 16)), "mlp_ratio": float(up.get("mlp_ratio", 4.0)),
        "qkv_bias": bool(up.get("qkv_bias", True)), "drop_path_rate": float(up.get("drop_path_rate", 0.0)),
        "layer_norm_eps": float(up.get("layer_norm_eps", 1e-5)), "time_conditioning": cond,
        "residual": bool(up.get("learn_residual", False)) and cond,
    }


def convert_state_dict(up: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename/reshape upstream tensors to ours (shape checks happen against the built model in ``convert``)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in up.items():
        m = _QKV.match(name)
        if m:
            qkv.setdefault(m.group(1), {})[m.group(2)] = tensor
            continue
        m = _COND_NORM.match(name)
        if m:  # ConditionalLayerNorm: Linear(1, C) pairs for γ(t) and β(t)
            base, which, part = m.groups()
            suffix = {("weight", "weight"): "weight_t", ("weight", "bias"): "weight",
                      ("bias", "weight"): "bias_t", ("bias", "bias"): "bias"}[(which, part)]
            name, tensor = f"{base}.{suffix}", tensor.reshape(-1)
        for pattern, repl in _RENAMES:
            name = re.sub(pattern, repl, name)
        out[name] = tensor
    for prefix, parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointError(f"{prefix}.attention.self: has {sorted(parts)} weights, needs query, key and value")
        new = prefix
        for pattern, repl in _RENAMES[:2]:
            new = re.sub(pattern, repl, new)
        out[f"{new}.attn.qkv.weight"] = torch.cat([parts["query"], parts["key"], parts["value"]], 0)
    return out


def read_upstream(src: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``config.json`` and the state dict of an upstream checkpoint directory or Hub id (never unpickles code)."""
    from sciformer import hub

    if hub.is_hub_ref(src):
        try:
            src = hub.resolve(src, weights=(hub.SAFETENSORS, hub.BIN), expected="a Poseidon/scOT checkpoint "
                              "(config.json + model.safetensors or pytorch_model.bin)")
        except CheckpointError as e:
            if str(src).startswith("hf:/"):
                raise
            raise CheckpointError(f"{src}: no such local directory; as a Hub id: {e}") from None
    src = Path(src)
    if not src.is_dir():
        raise CheckpointError(f"{src}: not a directory; expected a Poseidon checkpoint directory with config.json "
                              "and model.safetensors (e.g. a download of camlab-ethz/Poseidon-T)")
    cfg_file = src / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{src}: no config.json")
    try:
        up_cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({e})") from None
    config_from_poseidon(up_cfg)  # unsupported variants fail before reading any weights
    if (src / "model.safetensors").is_file():
        from safetensors.torch import load_file

        try:
            state = load_file(src / "model.safetensors")
        except Exception as e:  # truncated/corrupt file
            raise CheckpointError(f"{src / 'model.safetensors'}: unreadable ({e})") from None
    elif (src / "pytorch_model.bin").is_file():
        try:
            state = torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{src / 'pytorch_model.bin'}: cannot read with weights_only=True "
                                  f"({type(e).__name__}: {str(e)[:200]})") from None
    else:
        raise CheckpointError(f"{src}: neither model.safetensors nor pytorch_model.bin found")
    return up_cfg, state


def _size_name(cfg: dict[str, Any]) -> str | None:
    """The registered Poseidon size with these hyper-parameters, if any."""
    from sciformer import models

    for name in ("scot-t", "scot-s", "scot-b", "scot-l"):
        ref = models.config(name)
        if ref.embed_dim == cfg["embed_dim"] and list(ref.depths) == cfg["depths"]:
            return name
    return None


def build_converted(up_cfg: dict[str, Any], up_state: dict[str, torch.Tensor], source: str = "") -> torch.nn.Module:
    """The ScOT model filled with an upstream state dict; every tensor must be used and every parameter filled."""
    from sciformer.models.scot import ScOT, ScOTConfig

    model = ScOT(ScOTConfig(**config_from_poseidon(up_cfg)))
    ours = model.state_dict()
    mapped = convert_state_dict(up_state)
    unexpected = sorted(set(mapped) - set(ours))
    missing = sorted(set(ours) - set(mapped))
    if unexpected or missing:
        raise CheckpointError(
            f"{source}: checkpoint does not match scOT built from its config.json: unexpected (mapped) keys "
            f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}, missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}; is it a Poseidon/scOT checkpoint of this version?")
    wrong = [f"{k}: {tuple(mapped[k].shape)} vs {tuple(v.shape)}" for k, v in ours.items() if mapped[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{source}: tensor shapes differ from config.json: {wrong[:5]}")
    model.load_state_dict({k: v.to(ours[k].dtype) for k, v in mapped.items()})
    return model.eval()


def data_spec(cfg: dict[str, Any], inputs: list[str] | None, outputs: list[str] | None) -> dict[str, Any]:
    """What the checkpoint expects: variables by name (Poseidon's [rho, u, v, p] for 4→4) and their statistics."""
    n_in, n_out = cfg["in_channels"], cfg["out_channels"]
    if inputs is None and n_in == len(POSEIDON_VARIABLES):
        inputs = list(POSEIDON_VARIABLES)
    if outputs is None and n_out == len(POSEIDON_VARIABLES):
        outputs = list(POSEIDON_VARIABLES)
    for what, names, n in (("inputs", inputs, n_in), ("outputs", outputs, n_out)):
        if names is not None and len(names) != n:
            raise CheckpointError(f"--{what} names {len(names)} variables, the checkpoint has {n} channels")
    size = cfg["image_size"]
    spec: dict[str, Any] = {"layout": "fields", "in_channels": n_in, "out_channels": n_out,
                            "spatial_shape": list(size) if isinstance(size, (list, tuple)) else [size, size],
                            "steady": not cfg["time_conditioning"]}
    if inputs is not None:
        spec["inputs"] = inputs
    if outputs is not None:
        spec["outputs"] = outputs
    known = set(inputs or []) | set(outputs or [])
    spec["stats"] = {k: dict(v) for k, v in POSEIDON_STATS.items() if k in known}
    return spec


def convert(src: str | Path, out: str | Path, inputs: list[str] | None = None,
            outputs: list[str] | None = None) -> Path:
    """Convert an upstream checkpoint directory into a sciformer export directory."""
    from sciformer import hub, models

    origin = str(hub.parse(src)) if hub.is_hub_ref(src) else str(src)
    up_cfg, up_state = read_upstream(src)
    model = build_converted(up_cfg, up_state, origin)
    cfg = config_from_poseidon(up_cfg)
    extra = {"model_name": _size_name(cfg), "data_spec": data_spec(cfg, inputs, outputs),
             "source": {"format": "poseidon", "path": origin, "upstream_config": up_cfg,
                        "tensors": len(up_state)},
             "poseidon": POSEIDON_CONSTANTS}
    path = models.save(model, out, extra=extra)
    from sciformer import model_card

    model_card.write(path, path)  # a Hub-ready folder: README.md from what the conversion recorded
    return path


def _names(text: str | None) -> list[str] | None:
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(
        prog="sciformer convert",
        description="Convert a released checkpoint of another framework into a sciformer export directory.",
        epilog="examples:\n  sciformer convert poseidon camlab-ethz/Poseidon-T exports/poseidon-t\n"
               "  sciformer convert poseidon Poseidon-T/ exports/poseidon-t\n"
               "  sciformer convert poseidon my-scot-run/ exports/mine --inputs u,c --outputs u,c\n"
               "then: python -c \"import sciformer.models as m; print(m.load('exports/poseidon-t'))\"",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("framework", choices=["poseidon"], help="source format (Poseidon/scOT, camlab-ethz)")
    p.add_argument("src", help="upstream directory (config.json + model.safetensors or pytorch_model.bin) or a "
                   "Hugging Face Hub id: camlab-ethz/Poseidon-T, hf://org/name@revision")
    p.add_argument("out", help="export directory to write (model.safetensors + config.json)")
    p.add_argument("--inputs", help="comma-separated input variable names (default for 4 channels: rho,u,v,p)")
    p.add_argument("--outputs", help="comma-separated output variable names (default for 4 channels: rho,u,v,p)")
    a = p.parse_args(argv)
    out = convert(a.src, a.out, _names(a.inputs), _names(a.outputs))
    print(f"converted {a.src} -> {out}")
