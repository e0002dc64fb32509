"""Run a downstream suite (finetune/suite*.yaml): build each task's data, sweep fine-tuned vs baselines, and
write one table over all tasks (OUT/suite_results.md and .json). Rerunning resumes: stores and finished
sweep cells are kept.

    python finetune/run_suite.py --ckpt runs/quickstart/pretrained.ckpt --suite finetune/suite_cpu.yaml --out runs/suite_cpu
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from sciformer.data.commands import BUILDERS, _resolve
from sciformer.finetune import SweepConfig, sweep
from sciformer.io import atomic_path, write_json
from sciformer.report import markdown_table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, required=True, help="pretrained checkpoint or export directory")
    ap.add_argument("--suite", type=Path, default=Path(__file__).with_name("suite.yaml"))
    ap.add_argument("--out", type=Path, default=Path("runs/suite"))
    ap.add_argument("--data-dir", type=Path, default=Path("data/suite"), help="where task stores are built")
    ap.add_argument("--time-stride", type=int, default=4, help="every k-th snapshot (21 stored -> 6 at k=4)")
    args = ap.parse_args(argv)
    suite = yaml.safe_load(args.suite.read_text())
    budget = suite["budget"]
    cfg = SweepConfig(samples=budget["samples"], baselines=budget.get("baselines", ["scratch"]), seeds=budget["seeds"],
                      epochs=budget["epochs"], batch_size=budget["batch_size"],
                      fno_model=budget.get("fno_model", "fno-2d"), time_stride=args.time_stride)
    rows, results = [], {}
    for i, task in enumerate(suite["tasks"]):
        name = task["name"]
        t0 = time.perf_counter()
        store = _resolve(BUILDERS, name, "builder")(args.data_dir / f"{name}-{suite['resolution']}.zarr",
                                                    trajectories=task["trajectories"],
                                                    resolution=suite["resolution"], seed=1000 + i)
        summary = sweep(args.ckpt, Path(store), cfg, args.out / name)
        results[name] = {"kind": task["kind"], "summary": summary, "seconds": time.perf_counter() - t0}
        for n in cfg.samples:
            row = {"task": name, "kind": task["kind"], "trajectories": n}
            for model, table in summary["table"].items():
                v = table.get(n)
                row[model] = f"{v['mean']:.2f} ± {v['std']:.2f}" if v else None
            for base, g in summary["gains"].items():
                row[f"AG vs {base}"] = g["AG"].get(n)
            rows.append(row)
    header = (f"Budget per cell: {cfg.epochs} epochs, batch {cfg.batch_size}, seeds {cfg.seeds} (mean ± std), "
              f"{suite['resolution']}² grids, snapshot stride {cfg.time_stride}, all2all pairs. Error: median "
              "relative L1 (%) on the test split, normalised fields (Poseidon's convention). "
              f"Pretrained: `{args.ckpt}`.")
    with atomic_path(args.out / "suite_results.md") as tmp:
        tmp.write_text(f"# Downstream suite: {args.suite.name}\n\n{header}\n\n{markdown_table(rows, floatfmt='.2f')}\n")
    write_json(args.out / "suite_results.json", {"suite": str(args.suite), "ckpt": str(args.ckpt), "results": results})
    print((args.out / "suite_results.md").read_text())


if __name__ == "__main__":
    main()
