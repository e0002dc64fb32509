"""End-to-end effect of ``sciformer.kernels``: training-step time through the Lightning Trainer (the product path).

OperatorTask + AdamW on random fields held in memory (so data loading is not timed): FactFormer
(``factformer-2d-tiny``, 4 channels, 64², batch 16, as ``configs/pretrain/factformer_2d_ns.yaml``) and scOT-T
(4 channels, 128², batch 4, Poseidon's protocol), float32, ``--threads`` CPU threads. A step is timed from
``on_train_batch_start`` to ``on_train_batch_end`` (forward, loss, backward, optimizer), after ``--warmup``
steps (compilation happens there). Variants, each in its own process:

- ``before``: ``SCIFORMER_KERNELS=reference`` (the state the scOT and FactFormer issues left);
- ``auto``: the default mode (eager fast paths that need no compilation);
- ``compile``: ``SCIFORMER_KERNELS=compile`` (compiled LayerNorm, instance norm and window attention);
- ``auto+memory``, ``compile+memory``: plus ``kernels.keep_freed_memory()`` (glibc reuses freed activations);
- ``model-compile``: the whole model ``torch.compile``d (``nn.Module.compile``, mode auto), for comparison.

Wall time is distorted when other jobs share the cores; process CPU time (``cpu s``) less so, and the\nvariants run in ``--repeats`` interleaved rounds (median over rounds). Prints a table
with the ratio to ``before`` and writes JSON (``benchmarks/results/kernels_end_to_end.json``).

    python benchmarks/kernels_end_to_end.py
    python benchmarks/kernels_end_to_end.py --models factformer --variants before,auto,compile --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "kernels_end_to_end.json"
MODELS = {  # name: (registry name, channels, resolution, batch, extra model options)
    "factformer": ("factformer-2d-tiny", 4, 64, 16, {"residual": True}),
    "scot-t": ("scot-t", 4, 128, 4, {"image_size": 128}),
}
VARIANTS = ("before", "auto", "compile", "auto+memory", "compile+memory", "model-compile")


def run_one(model_key: str, variant: str, steps: int, warmup: int, threads: int) -> dict:
    """One (model, variant) in this process: returns per-step times."""
    mode = variant.split("+")[0]
    os.environ["SCIFORMER_KERNELS"] = {"before": "reference", "model-compile": "auto"}.get(mode, mode)
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, Dataset

    from sciformer import kernels
    from sciformer.tasks.operator import OperatorTask

    torch.set_num_threads(threads)
    applied = kernels.keep_freed_memory() if variant.endswith("memory") else False
    name, ch, res, batch, options = MODELS[model_key]

    class RandomFields(Dataset):
        def __len__(self):
            return batch * (warmup + steps)

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"x": torch.randn(ch, res, res, generator=g), "y": torch.randn(ch, res, res, generator=g),
                    "t": torch.rand((), generator=g), "mask": torch.ones(ch)}

    class StepTimer(L.Callback):
        def __init__(self):
            self.wall, self.cpu = [], []

        def on_fit_start(self, trainer, task):
            if variant.startswith("model-compile"):
                task.model.compile(dynamic=False)  # fixed shapes; scOT-T fails to lower with dynamic shapes

        def on_train_batch_start(self, *args):
            self._t = (time.perf_counter(), time.process_time())

        def on_train_batch_end(self, *args):
            self.wall.append(time.perf_counter() - self._t[0])
            self.cpu.append(time.process_time() - self._t[1])

    torch.manual_seed(0)
    task = OperatorTask(model=name, model_options={"in_channels": ch, "out_channels": ch, **options}, lr=1e-4)
    timer = StepTimer()
    trainer = L.Trainer(max_steps=warmup + steps, accelerator="cpu", precision="32-true", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(task, DataLoader(RandomFields(), batch_size=batch, shuffle=False))
    wall, cpu = timer.wall[warmup:], timer.cpu[warmup:]
    return {"model": model_key, "registry_name": name, "variant": variant, "batch": batch, "resolution": res,
            "channels": ch, "threads": threads, "memory_setting_applied": applied,
            "median_s": statistics.median(wall), "min_s": min(wall), "cpu_s": statistics.median(cpu),
            "first_steps_s": timer.wall[:warmup], "steps": len(wall),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds of all variants")
    p.add_argument("--only", help="internal: 'model,variant' in this process, JSON on stdout")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args()
    if a.only:
        print(json.dumps(run_one(*a.only.split(","), a.steps, a.warmup, a.threads)))
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), PYTHONWARNINGS="ignore")
    runs, load_before = [], os.getloadavg()
    for rnd in range(a.repeats):  # rounds interleave the variants, so a burst of load hits all of them alike
        for model_key in a.models.split(","):
            for variant in a.variants.split(","):
                cmd = [sys.executable, __file__, "--only", f"{model_key},{variant}", "--steps", str(a.steps),
                       "--warmup", str(a.warmup), "--threads", str(a.threads)]
                r = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if r.returncode:
                    print(f"{model_key} {variant}: failed\n{r.stderr[-3000:]}", file=sys.stderr)
                    continue
                runs.append({**json.loads(r.stdout.strip().splitlines()[-1]), "round": rnd})
                print(f"  round {rnd} {model_key} {variant}: {runs[-1]['median_s']:.3f} s "
                      f"({runs[-1]['cpu_s']:.3f} CPU s)", file=sys.stderr, flush=True)
    rows = []
    for model_key in a.models.split(","):
        for variant in a.variants.split(","):
            mine = [r for r in runs if r["model"] == model_key and r["variant"] == variant]
            if mine:
                rows.append({**mine[0], "median_s": statistics.median(r["median_s"] for r in mine),
                             "min_s": min(r["min_s"] for r in mine),
                             "cpu_s": statistics.median(r["cpu_s"] for r in mine),
                             "peak_rss_gib": max(r["peak_rss_gib"] for r in mine), "rounds": len(mine)})
    load = os.getloadavg()
    print(f"training step through the Lightning Trainer (CPU, {a.threads} threads, float32, median of "
          f"{a.repeats} interleaved rounds; load average {load_before[0]:.1f} before, "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} after)")
    print(f"{'model':11} {'variant':15} {'median s':>9} {'min s':>7} {'cpu s':>7} {'x before':>9} "
          f"{'x before (min)':>15} {'x before (cpu)':>15} {'peak RSS GiB':>13}")
    for r in rows:
        base = next((b for b in rows if b["model"] == r["model"] and b["variant"] == "before"), None)
        ratios = [f"{base[k] / r[k]:.2f}" if base else "-" for k in ("median_s", "min_s", "cpu_s")]
        print(f"{r['model']:11} {r['variant']:15} {r['median_s']:>9.3f} {r['min_s']:>7.3f} {r['cpu_s']:>7.2f} "
              f"{ratios[0]:>9} {ratios[1]:>15} {ratios[2]:>15} {r['peak_rss_gib']:>13.2f}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"rows": rows, "runs": runs, "loadavg_before": load_before, "loadavg_after": load,
                                 "machine": platform.processor() or platform.machine(),
                                 "torch_threads": a.threads}, indent=2))


if __name__ == "__main__":
    main()
