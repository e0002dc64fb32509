"""Rollout speed: a surrogate (scOT-T by default) vs the numerical solver that generated the data.

For the same trajectories, horizon and resolution (default: 16 trajectories of ``ns-sines`` at 128²):

- solver: wall time of ``sciformer data build <builder>`` (the product path; it includes writing the store);
- surrogate: ``sciformer.rollout.RolloutEngine`` over those trajectories (batch = all of them, AR over every
  stored snapshot), float32 and bf16 autocast, median of ``--repeats`` runs after a warm-up run; throughput in
  trajectory-steps/s, i.e. (trajectories × steps) / wall time. The model's weights do not change its cost; the
  blow-up guard is set to finiteness only so that an untrained model is not stopped early;
- the solver at coarser resolutions (``--coarse``): its wall time and its error against the finest build
  (nRMSE on the shared grid points, mean over trajectories, snapshots after the first and variables). With
  ``--ckpt`` (a trained surrogate for this data) the surrogate's own AR nRMSE on the same trajectories picks the
  coarsest solver resolution that is at least as accurate, and the speedup is also reported against it
  (DECISIONS: "report it as measured, and also the solver at the resolution that the surrogate's accuracy would
  require").

Usage::

    python benchmarks/rollout.py                                   # 128², 16 trajectories, scot-t, CPU
    python benchmarks/rollout.py --ckpt runs/scot/last.ckpt --coarse 32,64
    python benchmarks/rollout.py --device cuda --trajectories 64

Prints a markdown table and writes ``benchmarks/results/rollout.json``. Numbers on a shared machine are noisy:
the JSON records ``uptime`` (load average) before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sciformer import models
from sciformer.checkpoints import load_model
from sciformer.cli import main as cli
from sciformer.data.store import open_store
from sciformer.report import markdown_table
from sciformer.rollout import RolloutEngine, resolve_device, step_metrics


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "unavailable"


def build(builder: str, out: Path, trajectories: int, resolution: int, seed: int, options: list[str]) -> float:
    """Wall time of `sciformer data build` into a fresh path (no resume)."""
    shutil.rmtree(out, ignore_errors=True)
    argv = ["data", "build", builder, "--out", str(out), "--trajectories", str(trajectories), "--resolution",
            str(resolution), "--seed", str(seed)]
    for o in options:
        argv += ["--option", o]
    t0 = time.perf_counter()
    rc = cli(argv)
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"`sciformer {' '.join(argv)}` failed (exit {rc})")
    return wall


def store_spec(store) -> dict:
    """The data spec a model trained on this store would carry (states, then static fields)."""
    states = [v for v in store.variables if not store.is_static(v)]
    static = [v for v in store.variables if store.is_static(v)]
    return {"layout": "fields", "inputs": states + static, "outputs": states, "in_channels": len(states + static),
            "out_channels": len(states), "stats": dict(store.stats), "roles": dict(store.roles), "steady": False,
            "spatial_shape": list(store.spatial_shape)}


def build_model(name: str, spec: dict, resolution: int):
    try:
        return models.get(name, in_channels=spec["in_channels"], out_channels=spec["out_channels"],
                          image_size=resolution)
    except Exception:  # a model family without image_size
        return models.get(name, in_channels=spec["in_channels"], out_channels=spec["out_channels"])


def time_rollout(engine: RolloutEngine, ids: list[int], steps: int, repeats: int) -> dict:
    """Median over ``repeats`` of the rollout loop's wall time (model steps only) and of the whole run (with
    reading the initial conditions and ground truth from the store), after a warm-up run."""
    engine.run(ids, 1)  # warm-up (allocations, compilation)
    loop, total = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = engine.run(ids, steps)
        total.append(time.perf_counter() - t0)
        loop.append(res.seconds)
    return {"wall_s": statistics.median(loop), "walls": loop, "with_reading_s": statistics.median(total)}


def solver_error(coarse, fine) -> float:
    """nRMSE of a coarse build against the fine one on the coarse grid's points (the fine grid subsampled)."""
    ratio = [f // c for f, c in zip(fine.spatial_shape, coarse.spatial_shape)]
    if any(f != c * r for f, c, r in zip(fine.spatial_shape, coarse.spatial_shape, ratio)):
        raise SystemExit(f"resolution {coarse.spatial_shape} does not divide {fine.spatial_shape}")
    errs = []
    for i in range(coarse.n_trajectories):
        a, b = coarse.trajectory(i), fine.trajectory(i)
        for v in coarse.variables:
            if coarse.is_static(v):
                continue
            sub = b[v][(slice(None), *[slice(None, None, r) for r in ratio])]
            m = step_metrics(a[v][None, 1:, None], sub[None, 1:, None])["nrmse"]
            errs.append(float(np.mean(m)))
    return float(np.mean(errs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--builder", default="ns-sines")
    ap.add_argument("--option", action="append", default=[], help="builder option KEY=VALUE (repeatable)")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--coarse", default="", help="comma-separated coarser solver resolutions, e.g. 32,64")
    ap.add_argument("--trajectories", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--model", default="scot-t")
    ap.add_argument("--ckpt", default=None, help="a trained surrogate for this data (accuracy-matched comparison)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", choices=("both", "float32", "bf16"), default="both",
                    help="surrogate rows to time (bf16 is emulated, and slow, on CPUs without avx512_bf16)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--workdir", default=None, help="where the benchmark stores are built (default: a temp dir)")
    ap.add_argument("--out", default="benchmarks/results/rollout.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="sciformer-rollout-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"uptime_before": uptime(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "builder": args.builder, "options": args.option, "resolution": args.resolution,
                    "trajectories": args.trajectories, "model": args.model, "device": args.device,
                    "note": "shared machine: timings are noisy (see uptime)"}
    # --- solver at the benchmark resolution (and coarser ones) ---------------------------------------
    resolutions = sorted({int(r) for r in args.coarse.split(",") if r} | {args.resolution})
    solver = {}
    for r in resolutions:
        wall = build(args.builder, work / f"{args.builder}-{r}.zarr", args.trajectories, r, args.seed, args.option)
        solver[r] = {"wall_s": wall}
        print(f"solver {args.builder} {r}²: {wall:.2f} s for {args.trajectories} trajectories")
    fine = open_store(work / f"{args.builder}-{args.resolution}.zarr")
    steps = len(fine.time) - 1
    ids = list(range(fine.n_trajectories))
    result["steps"] = steps
    result["horizon"] = [float(fine.time[0]), float(fine.time[-1])]
    for r in resolutions:
        if r != args.resolution:
            solver[r]["nrmse_vs_finest"] = solver_error(open_store(work / f"{args.builder}-{r}.zarr"), fine)
    result["solver"] = {str(r): v for r, v in solver.items()}
    # --- surrogate throughput -------------------------------------------------------------------------
    spec = store_spec(fine)
    device = resolve_device(args.device)
    model = build_model(args.model, spec, args.resolution)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    surrogate = {}
    for label, bf16 in (("float32", False), ("bf16 autocast", True)):
        if args.precision != "both" and bf16 != (args.precision == "bf16"):
            continue
        engine = RolloutEngine(model, spec, fine, mode="ar", blowup_factor=float("inf"), device=device, bf16=bf16)
        timing = time_rollout(engine, ids, steps, args.repeats)
        wall = timing["wall_s"]
        surrogate[label] = {**timing, "trajectory_steps_per_s": len(ids) * steps / wall,
                            "speedup_vs_solver_same_resolution": solver[args.resolution]["wall_s"] / wall}
        print(f"{args.model} {label}: {wall:.2f} s, {len(ids) * steps / wall:.2f} trajectory-steps/s")
    result["surrogate"] = surrogate
    # --- accuracy-matched comparison ------------------------------------------------------------------
    if args.ckpt:
        trained, tspec = load_model(args.ckpt, kind="operator")
        engine = RolloutEngine(trained, tspec, fine, mode="ar", device=device)
        res = engine.run(ids, steps)
        err = float(np.nanmean(step_metrics(res.pred, res.truth)["nrmse"]))
        ok = [r for r in resolutions if r == args.resolution or solver[r]["nrmse_vs_finest"] <= err]
        match = min(ok)
        f32 = surrogate.get("float32", next(iter(surrogate.values())))["wall_s"]
        result["accuracy_matched"] = {
            "checkpoint": args.ckpt, "surrogate_nrmse": err, "solver_resolution": match,
            "solver_wall_s": solver[match]["wall_s"], "speedup": solver[match]["wall_s"] / f32,
            "rule": "coarsest solver resolution whose nRMSE vs the finest build is ≤ the surrogate's AR nRMSE"}
    result["uptime_after"] = uptime()
    rows = [{"what": f"solver {args.builder} {r}²", "wall s": v["wall_s"],
             "traj-steps/s": len(ids) * steps / v["wall_s"],
             "nRMSE vs finest": v.get("nrmse_vs_finest", 0.0 if r == args.resolution else None)}
            for r, v in solver.items()]
    rows += [{"what": f"{args.model} {label} ({device.type}, batch {len(ids)})", "wall s": v["wall_s"],
              "wall s with reading": v["with_reading_s"], "traj-steps/s": v["trajectory_steps_per_s"],
              "speedup vs solver": v["speedup_vs_solver_same_resolution"]} for label, v in surrogate.items()]
    table = markdown_table(rows, ["what", "wall s", "wall s with reading", "traj-steps/s", "speedup vs solver",
                                  "nRMSE vs finest"], floatfmt=".3g")
    result["table"] = table
    print(f"\n{args.trajectories} trajectories × {steps} steps at {args.resolution}² (noisy: {result['uptime_before']})")
    print(table)
    if "accuracy_matched" in result:
        print(json.dumps(result["accuracy_matched"], indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
