"""Scaling of one attention block: factorized (chained, parallel) vs full SDPA attention at the same width.

For 2-D grids 32²…256² and 3-D grids 16³…64³, times forward + backward (or forward only with
``--forward-only``) of one block on a random field and measures its peak memory:
CUDA: ``torch.cuda.max_memory_allocated`` above the inputs; CPU (Linux): the process's peak resident set
(``VmHWM``, reset through ``/proc/self/clear_refs`` after ``malloc_trim``) above the resident set before the
call. The CPU figure is an upper bound of the tensors' peak (allocator overheads, thread scratch included).

Each size is capped: a size is "not run" when the previous size's time, extrapolated with the method's
expected growth (∝ N² for full attention, ∝ N^(1+1/d) for factorized), exceeds ``--cap`` seconds; a size
that raises out-of-memory is reported as "OOM" (larger sizes of that method are then not run). For full
attention the JSON also records the bytes a materialised score matrix would take (SDPA's math path); the
flash / memory-efficient kernels avoid it, which is why full attention is usually time-bound, not
memory-bound. Prints a table, the fitted growth exponent of
time in the number of points N per method, the crossover (the smallest grid where factorized is faster /
lighter than full attention), and writes JSON.

    python benchmarks/factorized_attention.py --json runs/bench/factorized_attention.json
    python benchmarks/factorized_attention.py --cap 60 --dim 128 --heads 8 --dim-head 16 --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sciformer.nn.factorized_attention import FactorizedAttention


class FullAttention(nn.Module):
    """Multi-head self-attention over all N grid points through ``scaled_dot_product_attention``."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # [B, *S, dim]
        b, spatial = u.shape[0], u.shape[1:-1]
        q, k, v = self.qkv(u.reshape(b, -1, u.shape[-1])).view(b, -1, 3, self.heads, self.dim_head).unbind(2)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.out(y.transpose(1, 2).reshape(b, *spatial, -1))


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    raise KeyError(key)


try:
    import ctypes

    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:
    _LIBC = None


class PeakMemory:
    """Peak memory (bytes) of the code inside the ``with`` block, above what was in use at its start."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            if _LIBC is not None:
                _LIBC.malloc_trim(0)  # hand freed heap back to the OS so that reuse shows up as new residency
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident set
            self.base = _status_kb("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.peak = _status_kb("VmHWM") * 1024 - self.base


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_once(block, u, backward: bool, device) -> float:
    t0 = time.perf_counter()
    out = block(u)
    if backward:
        out.square().mean().backward()
    _sync(device)
    return time.perf_counter() - t0


def measure(method: str, shape: tuple[int, ...], args, device) -> dict:
    torch.manual_seed(0)
    nd = len(shape)
    if method == "full":
        block = FullAttention(args.dim, args.heads, args.dim_head)
    else:
        block = FactorizedAttention(args.dim, nd, args.heads, args.dim_head, kernel_multiplier=args.kernel_multiplier,
                                    mode=method.split("-")[1])
    block = block.to(device)
    u = torch.randn(args.batch, *shape, args.dim, device=device, requires_grad=not args.forward_only)
    backward = not args.forward_only

    def reset():
        block.zero_grad(set_to_none=True)
        u.grad = None

    first = run_once(block, u, backward, device)  # warm-up (one-time allocations, kernel selection)
    reset()
    with PeakMemory(device) as mem:  # a separate call: trimming the heap would slow a timed call
        run_once(block, u, backward, device)
    reset()
    if first > args.cap:
        return {"status": "ok", "seconds": first, "median_seconds": first, "peak_bytes": mem.peak, "runs": 1}
    times = []
    for _ in range(args.repeats):
        times.append(run_once(block, u, backward, device))
        reset()
        if sum(times) > 2 * args.cap:
            break
    # the minimum is the least noisy estimate on a shared machine; the median is kept beside it
    return {"status": "ok", "seconds": min(times), "median_seconds": statistics.median(times),
            "peak_bytes": mem.peak, "runs": len(times)}


def predicted_seconds(method: str, prev: dict | None, n_points: int, nd: int) -> float | None:
    if prev is None or prev["status"] != "ok":
        return None
    growth = 2.0 if method == "full" else 1.0 + 1.0 / nd
    return prev["seconds"] * (n_points / prev["n_points"]) ** growth


def math_path_bytes(n_points: int, args) -> int:
    """Bytes of full attention's score matrix if SDPA fell back to its math path (fp32)."""
    return 4 * args.batch * args.heads * n_points * n_points * (3 if not args.forward_only else 1)


def fit_exponent(rows: list[dict]) -> float | None:
    pts = [(math.log(r["n_points"]), math.log(r["seconds"])) for r in rows if r["status"] == "ok"]
    pts = pts[-3:]  # the largest sizes: the asymptotic regime
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def _fmt_mem(b):
    return "—" if b is None else f"{b / 2**20:,.1f} MiB"


def _fmt_entry(r):
    if r["status"] == "ok":
        return f"{r['seconds'] * 1e3:,.1f} ms / {_fmt_mem(max(r['peak_bytes'], 0))}"
    return r["status"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dim-head", type=int, default=16)
    p.add_argument("--kernel-multiplier", type=int, default=2)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--sizes-2d", default="32,64,128,256")
    p.add_argument("--sizes-3d", default="16,24,32,48,64")
    p.add_argument("--methods", default="factorized-chained,factorized-parallel,full")
    p.add_argument("--cap", type=float, default=20.0, help="seconds per call above which a size is not run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--forward-only", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=Path("runs/bench/factorized_attention.json"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    grids = [(int(n),) * 2 for n in args.sizes_2d.split(",") if n] + [(int(n),) * 3 for n in args.sizes_3d.split(",") if n]

    results = []
    prev: dict[tuple[str, int], dict] = {}
    for shape in grids:
        nd, n_points = len(shape), math.prod(shape)
        for method in methods:
            row = {"method": method, "grid": "x".join(map(str, shape)), "spatial_dims": nd, "n_points": n_points}
            pred = predicted_seconds(method, prev.get((method, nd)), n_points, nd)
            prev_status = prev.get((method, nd), {}).get("status", "ok")
            if prev_status != "ok":
                row.update(status=prev_status if prev_status == "OOM" else "not run (smaller grid over cap)")
            elif pred is not None and pred > args.cap:
                row.update(status=f"not run (predicted {pred:,.0f} s > cap {args.cap:g} s)", predicted_seconds=pred)
            else:
                try:
                    row.update(measure(method, shape, args, device))
                except (torch.OutOfMemoryError, MemoryError) as e:
                    row.update(status="OOM", error=str(e).splitlines()[0][:200])
                except RuntimeError as e:
                    if "memory" not in str(e).lower() and "allocate" not in str(e).lower():
                        raise
                    row.update(status="OOM", error=str(e).splitlines()[0][:200])
                if row["status"] == "ok" and row["seconds"] > args.cap:
                    row["over_cap"] = True
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            if method == "full":
                row["math_path_score_bytes"] = math_path_bytes(n_points, args)
            results.append(row)
            prev[(method, nd)] = row
            print(f"  {row['grid']:>10} {method:<20} {_fmt_entry(row)}", flush=True)

    # table
    print()
    header = "| grid | N | " + " | ".join(methods) + " |"
    print(header)
    print("|" + "---|" * (2 + len(methods)))
    for shape in grids:
        g = "x".join(map(str, shape))
        rows = {r["method"]: r for r in results if r["grid"] == g}
        print(f"| {g} | {math.prod(shape):,} | " + " | ".join(_fmt_entry(rows[m]) for m in methods) + " |")

    summary = {"exponent": {}, "crossover": {}}
    for nd in (2, 3):
        for m in methods:
            e = fit_exponent([r for r in results if r["method"] == m and r["spatial_dims"] == nd])
            summary["exponent"][f"{m}/{nd}d"] = e
        for m in methods:
            if m == "full":
                continue
            faster = lighter = None
            for shape in [s for s in grids if len(s) == nd]:
                g = "x".join(map(str, shape))
                rows = {r["method"]: r for r in results if r["grid"] == g}
                f, a = rows.get("full"), rows.get(m)
                if a is None or f is None or a["status"] != "ok":
                    continue
                if faster is None and (f["status"] != "ok" or a["seconds"] < f["seconds"]):
                    faster = g
                if lighter is None and (f["status"] == "OOM" or (f["status"] == "ok" and a["peak_bytes"] < f["peak_bytes"])):
                    lighter = g
            summary["crossover"][f"{m}/{nd}d"] = {"faster_from": faster, "less_memory_from": lighter}
    print("\ntime growth exponent in N (fit over the largest measured sizes; 1 = linear, 2 = quadratic):")
    for k, v in summary["exponent"].items():
        print(f"  {k:<28} {'—' if v is None else f'{v:.2f}'}")
    print("crossover (smallest grid where factorized beats full attention):")
    for k, v in summary["crossover"].items():
        print(f"  {k:<28} time: {v['faster_from'] or 'not within the sizes run'}; "
              f"memory: {v['less_memory_from'] or 'not within the sizes run'}")

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    meta = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "platform": platform.platform(), "cpu": platform.processor(), "loadavg": load,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "pass": "forward" if args.forward_only else "forward+backward",
            "note": "CPU peak memory is the process's peak resident set above its level before the call"}
    out = {"meta": meta, "results": results, "summary": summary}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print(f"\nwrote {args.json}")
    return out


if __name__ == "__main__":
    main()
