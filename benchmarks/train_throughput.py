"""Training throughput at the largest batch that fits: tokens/s, MFU and peak memory, eager vs compile vs
compile + CUDA graphs (one full training step: forward, Poseidon's loss, backward, fused AdamW, zero_grad).

The modes go through ``sciformer.parallel.parallelize`` — the code the task options ``compile: model`` and
``cudagraphs: true`` run — so this measures the product path. Per model: the eager batch search doubles the
batch from ``--batch`` until a step runs out of memory or reaches ``--max-batch`` (each trial a short probe),
then times ``--steps`` steps at the largest batch that fitted; the compiled modes run at that batch (halved once
if they do not fit). Every (model, mode) runs in its own process with its own time limit, so an out-of-memory
error, a slow compile or a hang costs only that row, which says why it has no number (never a silent gap).
Compile time (first step) is reported cold or warm as the persistent Inductor cache (``TORCHINDUCTOR_CACHE_DIR``)
found it.

Tokens: scOT counts patches (``(res / patch)²`` per sample), FactFormer grid points (``res²``). FLOPs per step
are counted once in eager with ``torch.utils.flop_counter`` (forward + backward; the optimizer is not counted).
MFU = FLOP/s ÷ ``--peak-tflops`` (dense bf16: 989 for H100/H200 SXM).

    python benchmarks/train_throughput.py --device cuda --out runs/throughput.json --table runs/throughput.md
    python benchmarks/train_throughput.py --device cpu --models scot-tiny,factformer-2d-tiny --resolution 32 \\
        --batch 2 --max-batch 4 --steps 2 --modes eager,compile,cudagraphs      # dry run of the whole path
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODES = ("eager", "compile", "cudagraphs")


def build(name: str, res: int, device: str):
    import torch

    from sciformer import models

    torch.manual_seed(0)
    opts = {"in_channels": 4, "out_channels": 4}
    if name.startswith("scot"):
        opts["image_size"] = res
    model = models.get(name, **opts).to(device).train()
    tokens = (res // model.config.patch_size) ** 2 if name.startswith("scot") else res * res
    return model, tokens


def make_step(model, batch: int, res: int, device: str, precision: str):
    import torch

    from sciformer.metrics.fields import group_relative_error

    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 4, res, res, generator=g).to(device)
    y = torch.randn(batch, 4, res, res, generator=g).to(device)
    t = torch.rand(batch, generator=g).to(device)
    mask = torch.ones(batch, 4, device=device)
    groups = [[0], [1, 2], [3]]
    dtype = torch.bfloat16 if precision in ("bf16", "bf16-master") else None
    master = None
    if precision == "bf16-master":  # bf16 parameters, the optimizer on fp32 masters (sciformer.precision)
        from sciformer.precision import BF16MasterWeights

        master = BF16MasterWeights()
        master.convert_module(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda" or None)
    if master is not None:
        master.connect(model, [opt], [])

    def step(update: bool = True):
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            pred = model(x, t)
        loss = group_relative_error(pred.float(), y, mask, groups).nanmean()
        loss.backward()
        if master is not None:
            master.grads_to_masters()
        if update:
            opt.step()
            if master is not None:
                master.masters_to_params()
        opt.zero_grad(set_to_none=True)  # (bf16-master: the bf16 gradients were dropped by grads_to_masters)
        return loss

    return step


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower() or \
        "not enough memory" in str(e).lower()


def run_one(a: argparse.Namespace) -> dict:
    """One (model, mode, batch) in this process: compile (first step), warm-up, timed steps."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sciformer import parallel

    torch.set_num_threads(a.threads)
    dev = a.device
    row = {"model": a.model, "mode": a.mode, "batch": a.batch, "resolution": a.resolution, "precision": a.precision,
           "device": dev, "torch": torch.__version__}
    if dev == "cuda":
        row["gpu"] = torch.cuda.get_device_name()
    model, tokens = build(a.model, a.resolution, dev)
    row["params"] = sum(p.numel() for p in model.parameters())
    step = make_step(model, a.batch, a.resolution, dev, a.precision)
    with FlopCounterMode(display=False) as fc:  # eager FLOPs of forward + backward (no parameter update)
        step(update=False)
    row["gflop_per_step"] = fc.get_total_flops() / 1e9
    if a.mode != "eager":
        row["compile_cache"] = str(parallel.compile_cache())
        parallel.parallelize(model, compile="model", cudagraphs=a.mode == "cudagraphs", device_type=dev)
    mark = torch.compiler.cudagraph_mark_step_begin if a.mode == "cudagraphs" else (lambda: None)
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    mark()
    step()
    _sync(dev)
    row["first_step_s"] = time.perf_counter() - t0  # includes compilation in the compiled modes
    for _ in range(a.warmup):
        mark()
        step()
    _sync(dev)
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        mark()
        step()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    row.update(median_s=med, min_s=min(times), steps=a.steps, tokens_per_s=a.batch * tokens / med,
               achieved_tflops=row["gflop_per_step"] / med / 1e3)
    if dev == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        row["mfu"] = row["achieved_tflops"] / a.peak_tflops
    else:
        import resource

        row["peak_memory_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return row


def probe_fits(a: argparse.Namespace) -> dict:
    """Does one eager step (forward, backward, update) fit at ``a.batch``?"""
    import torch

    torch.set_num_threads(a.threads)
    model, _ = build(a.model, a.resolution, a.device)
    try:
        step = make_step(model, a.batch, a.resolution, a.device, a.precision)
        step()
        _sync(a.device)
        return {"fits": True}
    except Exception as e:  # noqa: BLE001 - an out-of-memory error is the answer, anything else is reported
        if _oom(e):
            return {"fits": False}
        raise


def _child(a: argparse.Namespace, what: str, batch: int, mode: str, limit: float) -> tuple[dict | None, str]:
    cmd = [sys.executable, __file__, "--child", what, "--models", a.model_name, "--mode", mode,
           "--batch", str(batch), "--resolution", str(a.resolution), "--precision", a.precision, "--device", a.device,
           "--steps", str(a.steps), "--warmup", str(a.warmup), "--threads", str(a.threads),
           "--peak-tflops", str(a.peak_tflops)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, limit))
    except subprocess.TimeoutExpired:
        return None, f"not run: over its time limit ({limit:.0f} s)"
    if r.returncode:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, ("out of memory" if "out of memory" in r.stderr.lower() else f"failed: {tail[0][:200]}")
    return json.loads(r.stdout.strip().splitlines()[-1]), ""


def measure(a: argparse.Namespace, deadline: float) -> list[dict]:
    """Eager rows of every model first (the batch search is cheap), then the compiled modes model by model:
    when the budget runs out, the rows left say so."""
    modes = a.modes.split(",")
    names = a.models.split(",")

    def limit() -> float:
        return min(a.job_limit, deadline - time.monotonic())

    batches: dict[str, int | None] = {}
    rows: dict[tuple[str, str], dict] = {}
    for name in names:  # the largest batch that fits: double until out of memory or --max-batch
        a.model_name = name
        batch, fits = None, a.batch
        while fits <= a.max_batch and limit() > 5:
            out, _ = _child(a, "probe", fits, "eager", limit())
            if out is None or not out["fits"]:
                break
            batch, fits = fits, fits * 2
        batches[name] = batch
    order = [(n, m) for m in modes if m == "eager" for n in names] + [(n, m) for n in names for m in modes if m != "eager"]
    for name, mode in order:
        a.model_name = name
        batch = batches[name]
        base = {"model": name, "mode": mode, "device": a.device, "precision": a.precision, "batch": batch}
        if batch is None:
            rows[name, mode] = {**base, "status": f"not run: batch {a.batch} does not fit, or no time was left to try"}
        elif limit() < 10:
            rows[name, mode] = {**base, "status": "not run: the script's time budget was spent"}
        else:
            row, why = _child(a, "run", batch, mode, limit())
            if row is None and why == "out of memory" and batch > 1:
                row, why = _child(a, "run", batch // 2, mode, limit())
            rows[name, mode] = {**(row or base), "status": "ok" if row else why}
        print(json.dumps(rows[name, mode]), flush=True)
    return [rows[n, m] for n in names for m in modes]


def table(rows: list[dict]) -> str:
    lines = ["| model | mode | batch | tokens/s | TFLOP/s | MFU | peak GiB | first step s | step s | status |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]

    def cell(r: dict, key: str, fmt: str) -> str:
        return format(r[key], fmt) if r.get("status") == "ok" and key in r else "–"

    for r in rows:
        f = lambda key, fmt, r=r: cell(r, key, fmt)  # noqa: E731
        lines.append(f"| {r['model']} | {r['mode']} | {r.get('batch') or '–'} | {f('tokens_per_s', ',.0f')} | "
                     f"{f('achieved_tflops', '.1f')} | {f('mfu', '.1%')} | {f('peak_memory_gib', '.1f')} | "
                     f"{f('first_step_s', '.1f')} | {f('median_s', '.4f')} | {r.get('status', '')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="scot-t,factformer-2d,scot-b,scot-l")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="bf16", choices=("bf16", "bf16-master", "fp32"))
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--batch", type=int, default=8, help="first batch of the search")
    p.add_argument("--max-batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak for MFU (H100/H200 SXM: 989)")
    p.add_argument("--job-limit", type=float, default=240.0, help="seconds per (model, mode) process")
    p.add_argument("--budget", type=float, default=420.0, help="seconds for the whole measurement")
    p.add_argument("--out", type=Path, default=Path("runs/train_throughput.json"))
    p.add_argument("--table", type=Path, help="also write the markdown table here")
    p.add_argument("--child", choices=("probe", "run"), help=argparse.SUPPRESS)
    p.add_argument("--mode", default="eager", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        a.model = a.models
        print(json.dumps(probe_fits(a) if a.child == "probe" else run_one(a)))
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    deadline = time.monotonic() + a.budget
    rows = measure(a, deadline)
    md = table(rows)
    print(md)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"rows": rows, "loadavg": os.getloadavg(), "argv": sys.argv[1:]}, indent=2))
    if a.table:
        a.table.parent.mkdir(parents=True, exist_ok=True)
        a.table.write_text(md)


if __name__ == "__main__":
    main()
