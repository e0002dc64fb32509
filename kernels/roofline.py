"""CPU (or CUDA) ceilings for the roofline table, and the timing helpers the per-op benchmarks share.

Ceilings, measured first (``python kernels/roofline.py``, written to ``kernels/results/ceilings.json``):

- ``copy_gbs``: copy of a 256 MiB float32 tensor into an existing one (bytes read + written per second);
- ``fresh_gbs``: ``x + 1`` on a 64 MiB tensor *with a newly allocated result* — what an eager op pays when the
  allocator hands back fresh pages that the kernel must fault in and zero (see ``sciformer.kernels.cpu_memory``);
- ``fp32_gflops`` / ``bf16_gflops``: a 2048² matrix product.

On a CPU shared with other jobs use ``--threads 1``: with 2 threads a preempted OpenMP worker stalls every
barrier, and both ceilings and ops drop several-fold in ways that say nothing about the op.

Each op script (``bench_*.py``, same ``--threads``) predicts ``max(FLOPs / peak, bytes / copy bandwidth)`` from its minimal traffic model, then
measures (best of several runs: under shared load the minimum is the least distorted) and prints achieved
rates as fractions of the ceilings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def measure(fn, reps: int = 10, budget_s: float = 20.0, device: str = "cpu") -> dict:
    """Best and median wall seconds of ``fn()`` over ``reps`` runs (fewer if ``budget_s`` runs out), after one
    warm-up call."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn()
    sync()
    times, start = [], time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s and len(times) >= 3:
            break
    return {"best_s": min(times), "median_s": statistics.median(times), "runs": len(times)}


def measure_ceilings(device: str = "cpu") -> dict:
    n = 64 * 2**20  # 256 MiB of float32
    x = torch.randn(n, device=device)
    y = torch.empty_like(x)
    copy = measure(lambda x=x, y=y: y.copy_(x), device=device)["best_s"]
    small = x[: n // 4].clone()
    fresh = measure(lambda: small + 1, device=device)["best_s"]
    out = {"copy_gbs": 2 * n * 4 / copy / 1e9, "fresh_gbs": 2 * small.numel() * 4 / fresh / 1e9}
    for dtype, key in ((torch.float32, "fp32_gflops"), (torch.bfloat16, "bf16_gflops")):
        a = torch.randn(2048, 2048, device=device, dtype=dtype)
        b = torch.randn(2048, 2048, device=device, dtype=dtype)
        out[key] = 2 * 2048**3 / measure(lambda a=a, b=b: a @ b, reps=5, device=device)["best_s"] / 1e9
    return out


def environment(device: str) -> dict:
    load = os.getloadavg()
    return {"device": device, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(), "loadavg": load}


def ceilings(device: str = "cpu", refresh: bool = False) -> dict:
    """The stored ceilings of this device, measured now if missing (or if ``refresh``)."""
    path = RESULTS / f"ceilings_{device}_{torch.get_num_threads()}t.json"
    if path.exists() and not refresh:
        return json.loads(path.read_text())["ceilings"]
    c = measure_ceilings(device)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"ceilings": c, **environment(device)}, indent=2))
    return c


def predicted_s(flops: float, nbytes: float, c: dict) -> float:
    return max(flops / (c["fp32_gflops"] * 1e9), nbytes / (c["copy_gbs"] * 1e9))


def report(op: str, rows: list[dict], c: dict, device: str) -> None:
    """Print the roofline rows of one op and write ``kernels/results/<op>_<device>.json``."""
    env = environment(device)
    print(f"{op} on {device} ({env['threads']} threads, load average {env['loadavg'][0]:.1f}); ceilings: copy "
          f"{c['copy_gbs']:.0f} GB/s, fresh-result {c['fresh_gbs']:.0f} GB/s, fp32 {c['fp32_gflops']:.0f} GFLOP/s")
    print(f"{'case':28} {'path':12} {'GFLOP':>7} {'MB':>7} {'pred ms':>8} {'best ms':>8} {'median':>8} "
          f"{'GB/s':>6} {'GFLOP/s':>8} {'% roof':>7} {'x ref':>6}")
    for r in rows:
        ref = next(q for q in rows if q["case"] == r["case"] and q["path"] == "reference")
        r["achieved_gbs"] = r["bytes"] / r["best_s"] / 1e9
        r["achieved_gflops"] = r["flops"] / r["best_s"] / 1e9
        r["fraction_of_roofline"] = r["predicted_s"] / r["best_s"]
        r["speedup_vs_reference"] = ref["best_s"] / r["best_s"]
        print(f"{r['case']:28} {r['path']:12} {r['flops'] / 1e9:>7.2f} {r['bytes'] / 1e6:>7.1f} "
              f"{r['predicted_s'] * 1e3:>8.2f} {r['best_s'] * 1e3:>8.2f} {r['median_s'] * 1e3:>8.2f} "
              f"{r['achieved_gbs']:>6.1f} {r['achieved_gflops']:>8.1f} {r['fraction_of_roofline']:>7.0%} "
              f"{r['speedup_vs_reference']:>6.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{op}_{device}_{env['threads']}t.json").write_text(json.dumps({"rows": rows, "ceilings": c, **env}, indent=2))


def bench_paths(case: str, paths: dict, make_inputs, flops: float, nbytes: float, c: dict, device: str,
                reps: int) -> list[dict]:
    """Time forward + backward of each path on fresh inputs; one row per path."""
    rows = []
    for name, fn in paths.items():
        inputs = make_inputs()
        leaves = [a for a in inputs if isinstance(a, torch.Tensor) and a.requires_grad]

        def step(fn=fn, inputs=inputs, leaves=leaves):
            out = fn(*inputs)
            torch.autograd.grad(out, leaves, torch.ones_like(out))

        rows.append({"case": case, "path": name, "flops": flops, "bytes": nbytes,
                     "predicted_s": predicted_s(flops, nbytes, c), **measure(step, reps, device=device)})
    return rows


def setup(doc: str, reps: int) -> tuple[argparse.Namespace, dict]:
    """The common command line of the op benchmarks (device, threads, reps, --keep-freed-memory), applied; the
    device ceilings."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=reps)
    p.add_argument("--keep-freed-memory", action="store_true", help="sciformer.kernels.keep_freed_memory() first")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.keep_freed_memory:
        from sciformer.kernels import keep_freed_memory

        keep_freed_memory()
    return a, ceilings(a.device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    c = ceilings(a.device, refresh=True)
    print(f"ceilings on {a.device} ({a.threads} threads, load average {os.getloadavg()[0]:.1f}): "
          + ", ".join(f"{k} {v:.0f}" for k, v in c.items()))


if __name__ == "__main__":
    main()
