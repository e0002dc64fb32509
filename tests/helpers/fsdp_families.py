"""Run under ``torchrun --nproc_per_node 2`` (gloo): every family sharded per block by ``sciformer.parallel``
(``OUT compile``: FactFormer with ``compile: blocks`` under FSDP2 instead).

For each family and option set, each rank takes its own batch through the sharded model and through an
unsharded copy; the copy's gradients averaged over the ranks by hand are the reference of FSDP2's reduce-scatter
(float32). Writes ``{out}/rank{r}.json``: per case the max relative gradient error per parameter and of all
gradients together, the loss error, the bytes
of parameters this rank holds, and the dtypes seen (bf16 policy).
"""

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from sciformer import models, parallel


def inputs(name: str, rank: int):
    g = torch.Generator().manual_seed(100 + rank)
    if name.startswith("scot"):
        return (torch.randn(2, 2, 32, 32, generator=g), torch.rand(2, generator=g))
    if name.startswith("factformer"):
        return (torch.randn(2, 2, 16, 16, generator=g), torch.rand(2, generator=g))
    if name.startswith("adit"):
        mask = torch.ones(2, 5, dtype=torch.bool)
        mask[1, 3:] = False
        return (torch.randn(2, 5, 8, generator=g), torch.rand(2, generator=g), mask, None, torch.tensor([0, 1]))
    return (torch.randn(2, 24, 3, generator=g),)


def build(name: str):
    torch.manual_seed(0)
    if name.startswith("scot"):
        return models.get(name, in_channels=2, out_channels=2, image_size=32)
    if name.startswith("factformer"):
        return models.get(name, in_channels=2, out_channels=2, dim=16, depth=2, heads=2, dim_head=8)
    if name.startswith("adit"):
        model = models.get(name, hidden_size=32, depth=2, num_heads=2, class_dropout=0.0)
        with torch.no_grad():  # adaLN-Zero starts as the identity with a zero output: give every weight a gradient
            for q in model.parameters():
                q.add_(0.02 * torch.randn_like(q))
        return model
    return models.get(name, e_layers=2, dropout=0.0)


def loss_of(out):
    return (out.float() ** 2).mean()


def case(name: str, precision: str, ac: bool, mesh, compile: str = "none") -> dict:
    ref = build(name).train()
    model = copy.deepcopy(ref)
    parallel.parallelize(model, mesh=mesh, precision=precision, activation_checkpointing=ac, compile=compile)
    x = inputs(name, dist.get_rank())
    bf16 = precision == "bf16-mixed"  # the reference: plain bf16 autocast (which casts every weight per op)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        ref_loss = loss_of(ref(*x))
    ref_loss.backward()
    for p in ref.parameters():  # what data parallelism must produce: the mean of the ranks' gradients
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(*x)
    loss = loss_of(out)
    loss.backward()
    errors, grad_dtypes, ours, theirs = [], set(), [], []
    for p, q in zip(model.parameters(), ref.parameters()):
        if q.grad is None:
            continue
        g = p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
        grad_dtypes.add(str(p.grad.dtype))
        errors.append(float((g - q.grad).norm() / q.grad.norm().clamp_min(1e-12)))
        ours.append(g.flatten())
        theirs.append(q.grad.flatten())
    ours, theirs = torch.cat(ours), torch.cat(theirs)
    local, total = parallel.local_parameter_bytes(model)
    return {"grad_rel_err": max(errors), "grads_rel_err": float((ours - theirs).norm() / theirs.norm()),
            "loss_rel_err": float(abs(loss.detach() - ref_loss.detach()) / ref_loss.detach()),
            "local_bytes": local, "total_bytes": total, "out_dtype": str(out.dtype), "grad_dtypes": sorted(grad_dtypes),
            "all_dtensor": all(isinstance(p, DTensor) for p in model.parameters()),
            "class": parallel.family_class(model).__name__, "blocks": model._sciformer_parallel["blocks"]}


def main(out: str, only: str = "") -> None:
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    results = {}
    if only == "compile":  # compile: blocks under FSDP2 (each block's forward compiled, its hooks outside)
        results["factformer-2d-tiny/compile"] = case("factformer-2d-tiny", "32-true", False, mesh, "blocks")
        results["factformer-2d-tiny/compile+ac"] = case("factformer-2d-tiny", "32-true", True, mesh, "blocks")
    for name in () if only else ("scot-tiny", "factformer-2d-tiny", "adit-dit-tiny", "itransformer-tiny"):
        results[f"{name}/fp32"] = case(name, "32-true", False, mesh)
        results[f"{name}/ac"] = case(name, "32-true", True, mesh)
    if not only:
        results["scot-tiny/bf16"] = case("scot-tiny", "bf16-mixed", False, mesh)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{dist.get_rank()}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
