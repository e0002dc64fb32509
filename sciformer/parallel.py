"""FSDP2 sharding, activation checkpointing and compilation, applied to a model from outside it.

torchtitan's ``parallelize.py`` is the example: the family's spec names its blocks (``FamilySpec.blocks``:
scOT's stages and skip blocks, FactFormer's and the DiT's blocks, iTransformer's layers) and this module
wraps them, in this order, so that each step composes with the next:

1. activation checkpointing per block: the block's ``forward`` recomputes in the backward pass
   (``torch.utils.checkpoint``, non-reentrant);
2. ``compile: blocks``: each block's ``forward`` through ``torch.compile(fullgraph=True, dynamic=False)``
   (static shapes: a new shape recompiles once); ``compile: model`` compiles the whole forward instead;
3. FSDP2: ``fully_shard`` on each block, then on the model (the root takes every remaining parameter). The
   block's hooks run outside its compiled ``forward``, so a compiled block has no collective inside its graph.

Module and parameter names never change (no wrapper modules, no ``_orig_mod.``), so state dicts, the spec's
patterns and checkpoints read the same with or without any of this. ``sciformer.tasks.base.BaseTask``
calls :func:`parallelize` from ``configure_model`` (task options ``compile``, ``cudagraphs``,
``activation_checkpointing``; FSDP2 when the trainer's strategy is Lightning's ``ModelParallelStrategy``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sciformer.errors import ConfigError
from sciformer.models.spec import spec_of

COMPILE = ("none", "model", "blocks")
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
_APPLIED = "_sciformer_parallel"  # attribute marking a model already prepared (configure_model runs per stage)


def check_options(compile: str, cudagraphs: bool, activation_checkpointing: bool) -> None:
    """One ConfigError for an option value that cannot work, before anything is built."""
    if compile not in COMPILE:
        raise ConfigError(f"model.init_args.compile={compile!r}: use one of {', '.join(COMPILE)}")
    if cudagraphs and compile == "none":
        raise ConfigError("model.init_args.cudagraphs=true needs compile: model or blocks (CUDA graphs are "
                          "captured by torch.compile's reduce-overhead mode)")
    if not isinstance(activation_checkpointing, bool):
        raise ConfigError(f"model.init_args.activation_checkpointing={activation_checkpointing!r}: true or false")


def compile_cache(path: str | os.PathLike | None = None) -> Path:
    """Make Inductor's on-disk caches (FX graphs, AOTAutograd, autotuning) persistent across runs.

    ``$TORCHINDUCTOR_CACHE_DIR`` wins; otherwise ``path``, else ``$XDG_CACHE_HOME/sciformer/inductor``
    (``~/.cache/...``) instead of torch's default under ``/tmp``, which does not survive a reboot or a new
    container. A warm cache skips code generation and the C++/Triton builds; tracing still runs."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if path is None:
        path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sciformer" / "inductor"
    Path(path).mkdir(parents=True, exist_ok=True)
    os.environ[CACHE_ENV] = str(path)
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    torch._functorch.config.enable_autograd_cache = True
    return Path(path)


def mixed_precision(precision: str):
    """FSDP2's policy for Lightning's ``precision``: bf16 compute copies of the parameters (gathered in bf16,
    so autocast casts no weight) with fp32 master weights, optimizer state and gradient reduction."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    p = str(precision)
    if p in ("32-true", "32"):
        return None
    if p == "bf16-mixed":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    raise ConfigError(f"trainer.precision={p!r} with FSDP2: use bf16-mixed (bf16 parameters, fp32 master weights "
                      "and reduction) or 32-true")


def shard_mesh(mesh):
    """The mesh to shard over, from Lightning's ``ModelParallelStrategy`` mesh (``data_parallel``,
    ``tensor_parallel``). No tensor parallelism is applied, so its second dimension (default: the devices of a
    node) is the shard dimension and the first (default: the nodes) replicates: HSDP across nodes, FSDP within."""
    if mesh is None or mesh.ndim == 1:
        return mesh
    if mesh.ndim != 2:
        raise ConfigError(f"FSDP2 needs a 1-D or 2-D device mesh, got {mesh.ndim}-D")
    dp, tp = mesh.mesh_dim_names or (None, None)
    if mesh.size(0) == 1:
        return mesh[tp] if tp else mesh
    if mesh.size(1) == 1:
        return mesh[dp] if dp else mesh
    return mesh  # 2-D: replicate over dim 0, shard over dim 1


def _checkpointed(fn):
    from torch.utils.checkpoint import checkpoint

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any):
        if not torch.is_grad_enabled():
            return fn(*args, **kwargs)
        return checkpoint(fn, *args, use_reentrant=False, **kwargs)

    return run


def _compiled(fn, cudagraphs: bool):
    return torch.compile(fn, fullgraph=True, dynamic=False, mode="reduce-overhead" if cudagraphs else None)


def parallelize(model: nn.Module, *, mesh=None, precision: str = "32-true", compile: str = "none",
                cudagraphs: bool = False, activation_checkpointing: bool = False,
                device_type: str = "cpu") -> nn.Module:
    """Prepare ``model`` in place (see the module docstring) and return it; a second call does nothing.

    mesh: a device mesh to shard over with FSDP2 (``None``: no sharding).
    precision: Lightning's precision string; ``bf16-mixed`` gives FSDP2 its bf16/fp32 mixed-precision policy.
    compile: "none" | "model" (the whole forward) | "blocks" (each block's forward).
    cudagraphs: capture CUDA graphs (``mode="reduce-overhead"``); CUDA only, static shapes, not with FSDP2.
    activation_checkpointing: recompute each block's forward in the backward pass.
    """
    if getattr(model, _APPLIED, None) is not None:
        return model
    check_options(compile, cudagraphs, activation_checkpointing)
    if cudagraphs and device_type != "cuda":
        raise ConfigError(f"model.init_args.cudagraphs=true needs a CUDA device (this run is on {device_type})")
    if mesh is not None and (compile == "model" or cudagraphs):
        raise ConfigError("with FSDP2 (ModelParallelStrategy) use compile: blocks and cudagraphs: false: a whole-"
                          "model graph would contain the sharding's collectives, and CUDA graphs cannot capture them")
    spec = spec_of(model)
    blocks = spec.block_modules(model)
    if not blocks and (activation_checkpointing or compile == "blocks"):
        raise ConfigError(f"{type(model).__name__} declares no blocks (FamilySpec.blocks): use compile: model "
                          "and activation_checkpointing: false")
    if compile != "none":
        compile_cache()
    for _, block in blocks:
        if activation_checkpointing:
            block.forward = _checkpointed(block.forward)
        if compile == "blocks":
            block.forward = _compiled(block.forward, cudagraphs)
    if mesh is not None:
        from torch.distributed.fsdp import fully_shard

        m, policy = shard_mesh(mesh), mixed_precision(precision)
        kw = {"mesh": m} if policy is None else {"mesh": m, "mp_policy": policy}
        for i, (_, block) in enumerate(blocks):
            # the last block's parameters are needed again at once by the backward pass: keep them gathered
            fully_shard(block, reshard_after_forward=i < len(blocks) - 1, **kw)
        fully_shard(model, **kw)
    if compile == "model":
        model.forward = _compiled(model.forward, cudagraphs)
    setattr(model, _APPLIED, {"fsdp": mesh is not None, "compile": compile, "cudagraphs": cudagraphs,
                              "activation_checkpointing": activation_checkpointing,
                              "blocks": [name for name, _ in blocks]})
    return model


def family_class(model: nn.Module) -> type[nn.Module]:
    """The model's own class: ``fully_shard`` swaps a module's class for a subclass named ``FSDP<class>``."""
    from torch.distributed.fsdp import FSDPModule

    cls = type(model)
    return next(c for c in cls.__mro__[1:] if not issubclass(c, FSDPModule)) if issubclass(cls, FSDPModule) else cls


def local_parameter_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes of parameters this rank holds, bytes of all parameters): a sharded parameter counts its shard."""
    from torch.distributed.tensor import DTensor

    local = total = 0
    for p in model.parameters():
        size = p.element_size()
        total += p.numel() * size
        local += (p.to_local() if isinstance(p, DTensor) else p).numel() * size
    return local, total
