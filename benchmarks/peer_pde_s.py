"""CPU efficiency of a training step: sciformer's scOT-T against PDE-Transformer's PDE-S, side by side.

One step = forward + loss + backward (no optimizer), float32, batch 4, 4 channels, 128²:

- scOT-T as in ``benchmarks/scot_step.py`` (lead time as input, Poseidon's grouped relative L1 loss);
- PDE-S, mixed channels (``pdetransformer.core.mixed_channels.PDETransformer(type="PDE-S")``) with the settings of
  PDE-Transformer's own supervised config ``config/ape_2d/supervised/pde-mc-s-mse.yaml``: patch 4, window 8
  (the class default), periodic, no carrier tokens, 128², and its supervised step
  (``SingleStepSupervised.training_step``: ``model(x, class_labels=task).sample``, plain MSE). Only the channel
  count (4 in and out instead of that config's 2) is changed, to feed both models the same batch.

FLOPs of one step are counted once per model with ``FlopCounterMode`` (matmuls, convolutions, attention; the
elementwise work is not counted, so GFLOP/s is the rate of the dense math). The two steps are then timed in
alternating pairs (scOT, PDE-S, scOT, PDE-S, ...) after warm-up, so load from other jobs on the machine falls on
both alike; wall and process CPU time per step, medians. By default the process keeps freed memory, as
sciformer's training does on CPU (``--allocator glibc``: glibc's default, which page-faults every large
activation anew). Besides GFLOP/s of wall time against the peak of the cores used, FLOPs per second of process
CPU time against one core's peak show the kernels' efficiency while other jobs hold the cores (spin-waiting
threads inflate CPU time, so that figure is a lower bound). The fp32 peak is cores × clock × 32 FLOP/cycle/core:
AMD Zen 3 and Zen 4 (EPYC family 25) have two 256-bit FMA pipes (Zen 4 issues an AVX-512 FMA over both),
2 × 8 lanes × 2.
The clock is lscpu's max MHz, or /proc/cpuinfo's ``cpu MHz`` where lscpu has none (virtual machines).

Needs ``pdetransformer`` (not a sciformer dependency; it pulls diffusers, timm, lightning, wandb...), so it runs
from its own environment with sciformer installed editable next to it (pin torch so pip never pulls CUDA torch;
torchvision 0.28.0 from PyPI is a CUDA build whose C++ ops fail to load on CPU torch, so this script declares the
two op signatures torchvision's import needs; pdetransformer imports a function that transformers 5 removed):

    python3.11 -m venv /work/pde_venv
    /work/pde_venv/bin/pip install torch==2.13.0
    /work/pde_venv/bin/pip install pdetransformer torch==2.13.0 torchvision==0.28.0
    /work/pde_venv/bin/pip install "transformers>=4.42.3,<5" "diffusers>=0.28.2" "huggingface_hub<1" "setuptools<81" torch==2.13.0
    /work/pde_venv/bin/pip install -e . --no-deps

    /work/pde_venv/bin/python benchmarks/peer_pde_s.py                    # 2 threads, then 1 thread
    /work/pde_venv/bin/python benchmarks/peer_pde_s.py --threads 2 --pairs 8
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "peer_pde_s.json"
FLOP_PER_CYCLE = 32  # fp32, per core: Zen 4, 2 FMA pipes × 8 lanes (256 bit) × 2 FLOP
BATCH, CHANNELS, RES = 4, 4, 128
PDE_S_CONFIG = {"type": "PDE-S", "sample_size": RES, "in_channels": CHANNELS, "out_channels": CHANNELS,
                "patch_size": 4, "window_size": 8, "periodic": True, "carrier_token_active": False}


def machine() -> dict:
    """lscpu model and flags, the clock used for the peak and where it came from."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    field = dict(re.findall(r"^([^:\n]+):\s*(.*)$", lscpu, re.M))
    cpuinfo = Path("/proc/cpuinfo").read_text()
    flags = set(re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.M).group(1).split())
    if field.get("CPU max MHz"):
        mhz, source = float(field["CPU max MHz"]), "lscpu 'CPU max MHz'"
    else:
        values = [float(v) for v in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.M)]
        mhz, source = statistics.mean(values), "/proc/cpuinfo 'cpu MHz' (lscpu reports no max MHz)"
    return {"model_name": field.get("Model name"), "cpu_family": field.get("CPU family"),
            "cpu_model": field.get("Model"), "cores": os.cpu_count(), "hypervisor": field.get("Hypervisor vendor"),
            "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags, "clock_mhz": mhz,
            "clock_source": source, "fp32_flop_per_cycle_per_core": FLOP_PER_CYCLE,
            "peak_assumption": "Zen 4: two 256-bit FMA pipes per core, a 512-bit FMA issued over both; "
                               "2 x 8 fp32 lanes x 2 FLOP = 32 FLOP/cycle/core; no boost above the stated clock",
            "python": platform.python_version()}


def load_pdetransformer():
    """PDE-Transformer's mixed-channel model class, imported without the package's ``__init__``.

    That ``__init__`` imports the whole data and training stack, and its dataset module fetches a dataset index
    from the Hugging Face hub over the network at import time; the model module needs none of it.
    """
    spec = importlib.util.find_spec("pdetransformer")
    if spec is None:
        sys.exit("peer_pde_s.py needs the `pdetransformer` package (PDE-Transformer), which is not installed in "
                 f"{sys.executable}; run it from the environment that has it (see the module docstring)")
    _allow_cuda_built_torchvision()
    root = Path(spec.origin).parent
    for name, sub in [("pdetransformer", ""), ("pdetransformer.core", "core"),
                      ("pdetransformer.core.mixed_channels", "core/mixed_channels")]:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(root / sub)]
        sys.modules.setdefault(name, pkg)
    from pdetransformer.core.mixed_channels.pde_transformer import PDETransformer

    return PDETransformer


def _allow_cuda_built_torchvision() -> None:
    """Let a CUDA-built torchvision import on a CPU-only torch (timm, which PDE-S uses, imports torchvision.ops).

    PyPI's torchvision wheels link CUDA torch; on a CPU torch their C ops do not load, and torchvision's import
    then fails registering fake kernels for two of those ops. Declaring the two schemas lets the pure-Python parts
    import; neither op is called here.
    """
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        return
    try:
        torch.ops.load_library(str(Path(spec.origin).parent / "_C.so"))
    except OSError:
        for op in ("nms", "qnms"):
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def build_steps():
    """{name: (step function, FLOPs of one step, parameter count)} for scOT-T and PDE-S on the same batch."""
    import torch
    from torch.nn.functional import mse_loss
    from torch.utils.flop_counter import FlopCounterMode

    PDETransformer = load_pdetransformer()  # first: sciformer's imports (lightning) reach torchvision too
    from sciformer import kernels, models
    from sciformer.tasks.operator import group_relative_error

    torch.manual_seed(0)
    x = torch.randn(BATCH, CHANNELS, RES, RES)
    y = torch.randn(BATCH, CHANNELS, RES, RES)

    scot = models.get("scot-t", in_channels=CHANNELS, out_channels=CHANNELS, image_size=RES).train()
    lead = torch.rand(BATCH)
    mask = torch.ones(BATCH, CHANNELS)

    def scot_step():
        loss = group_relative_error(scot(x, lead), y, mask, [[0], [1, 2], [3]]).mean()
        loss.backward()
        scot.zero_grad(set_to_none=True)

    pde = PDETransformer(**PDE_S_CONFIG).train()
    task = torch.randint(0, 16, (BATCH,))  # PDE type index, as the APE 2D multi-task data feeds it

    def pde_step():
        loss = mse_loss(pde(x, class_labels=task).sample, y)
        loss.backward()
        pde.zero_grad(set_to_none=True)

    with kernels.use("reference"), FlopCounterMode(display=False) as fc:  # oneDNN's linear is invisible to it
        scot_step()
    scot_flops = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        pde_step()
    return {"scot-t": (scot_step, scot_flops, sum(p.numel() for p in scot.parameters())),
            "pde-s": (pde_step, fc.get_total_flops(), sum(p.numel() for p in pde.parameters()))}


def time_pairs(steps: dict, threads: int, pairs: int, warmup: int, peak_per_core: float) -> dict:
    """Alternating pairs of steps at ``threads`` threads; per-pair times, medians and efficiency."""
    import torch

    torch.set_num_threads(threads)
    for _ in range(warmup):
        for step, _, _ in steps.values():
            step()
    wall: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    load_before = os.getloadavg()
    for _ in range(pairs):
        for name, (step, _, _) in steps.items():
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    peak = peak_per_core * threads
    rows = {}
    for name, (_, flops, params) in steps.items():
        med = statistics.median(wall[name])
        rows[name] = {"median_s": med, "min_s": min(wall[name]), "median_cpu_s": statistics.median(cpu[name]),
                      "wall_s_per_pair": wall[name], "cpu_s_per_pair": cpu[name], "gflop_per_step": flops / 1e9,
                      "gflops": flops / med / 1e9, "gflops_best": flops / min(wall[name]) / 1e9,
                      "percent_of_peak": 100 * flops / med / peak,
                      "gflop_per_cpu_s": flops / statistics.median(cpu[name]) / 1e9,
                      "percent_of_core_peak_per_cpu_s": 100 * flops / statistics.median(cpu[name]) / peak_per_core,
                      "params": params}
    return {"threads": threads, "pairs": pairs, "warmup_steps": warmup, "peak_gflops": peak / 1e9,
            "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "models": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    p.add_argument("--pairs", type=int, default=5, help="timed pairs per thread count (at least 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed pairs per thread count (after the FLOP count)")
    p.add_argument("--allocator", choices=("kept", "glibc"), default="kept",
                   help="kept: the process keeps freed memory (sciformer.kernels.keep_freed_memory, as sciformer's "
                        "training does on CPU), for both models; glibc: the allocator's default")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args()
    if a.pairs < 5:
        p.error("--pairs: at least 5")
    import torch

    if a.allocator == "kept":
        from sciformer.kernels import keep_freed_memory

        keep_freed_memory()

    info = machine()
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    steps = build_steps()
    peak_per_core = info["clock_mhz"] * 1e6 * FLOP_PER_CYCLE
    runs = [time_pairs(steps, t, a.pairs, a.warmup, peak_per_core) for t in a.threads]
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    print(f"{info['model_name']} ({info['cores']} cores, {info['clock_mhz']:.0f} MHz from {info['clock_source']}; "
          f"avx512f={info['avx512f']} avx512_bf16={info['avx512_bf16']}), torch {torch.__version__}")
    print(f"fp32 step, batch {BATCH}, {CHANNELS} ch, {RES}², allocator {a.allocator}; load before: {uptime_before}")
    print(f"{'model':7} {'thr':>3} {'params':>7} {'GFLOP':>6} {'median s':>9} {'min s':>6} {'CPU s':>6} "
          f"{'GFLOP/s':>8} {'peak':>6} {'% peak':>7} {'GFLOP/CPU s':>11} {'% core peak':>11}")
    for r in runs:
        for name, m in r["models"].items():
            print(f"{name:7} {r['threads']:>3} {m['params'] / 1e6:>6.1f}M {m['gflop_per_step']:>6.1f} "
                  f"{m['median_s']:>9.3f} {m['min_s']:>6.3f} {m['median_cpu_s']:>6.2f} {m['gflops']:>8.1f} "
                  f"{r['peak_gflops']:>6.0f} {m['percent_of_peak']:>6.1f}% {m['gflop_per_cpu_s']:>11.1f} "
                  f"{m['percent_of_core_peak_per_cpu_s']:>10.1f}%")
    print(f"load after: {uptime_after}")

    result = {"machine": info, "torch": torch.__version__, "batch": BATCH, "channels": CHANNELS, "resolution": RES,
              "precision": "fp32", "allocator": a.allocator, "pde_s_config": PDE_S_CONFIG,
              "pde_s_source": "pdetransformer/core/mixed_channels/pde_transformer.py PDE_S (hidden 96, heads 4, "
                              "depth [2,5,8,5,2], mlp_ratio 4, down_factor 2) with "
                              "config/ape_2d/supervised/pde-mc-s-mse.yaml's model params",
              "uptime_before": uptime_before, "uptime_after": uptime_after, "runs": runs}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
