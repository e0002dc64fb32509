"""The end-to-end demo behind `sciformer quickstart` (the README's main command).

One run does the platform's three jobs on data it builds itself: pretrain a small operator model on a
Navier–Stokes mixture, fine-tune it on a downstream set of *different* physics with a few trajectories
against the same model trained from scratch, and roll both out. Each stage is resumable: data builds resume,
a finished pretraining is reused, and the sweep keeps its finished cells. Sizes fit a 2-core laptop in
about five minutes; they are a pipeline demo, not a benchmark (claims come from `finetune/`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sciformer.errors import SciformerError
from sciformer.io import write_json


@dataclass
class QuickstartConfig:
    """Sizes of every stage (defaults: the README demo on 2 CPU cores)."""

    pretrain_data: dict[str, int] = field(default_factory=lambda: {"ns-sines": 48, "ns-gauss": 48})
    downstream: str = "allen-cahn"
    downstream_trajectories: int = 48
    resolution: int = 64
    model: str = "scot-tiny"
    model_options: dict[str, Any] = field(default_factory=lambda: {"residual": True})
    pretrain_epochs: int = 8
    pretrain_minutes: float = 7.0  # wall-clock cap of pretraining (the report says how many epochs ran)
    batch_size: int = 16
    lr: float = 1e-3
    # pretraining pairs: snapshots 0, 2, ..., 14 (8 per trajectory, 36 all2all pairs, as configs/pretrain/scot_tiny_cpu)
    time_stride: int = 2
    max_snapshots: int | None = 8
    # fine-tuning and rollout: snapshots 0, 4, ..., 20 (6 per trajectory, 21 pairs; a 5-step rollout)
    finetune_time_stride: int = 4
    samples: list[int] = field(default_factory=lambda: [8, 32])
    finetune_epochs: int = 12
    seed: int = 0


def _build(name: str, out: Path, trajectories: int, resolution: int, seed: int) -> tuple[Path, float]:
    from sciformer.data.commands import BUILDERS, _resolve

    t0 = time.perf_counter()
    path = _resolve(BUILDERS, name, "builder")(out, trajectories=trajectories, resolution=resolution, seed=seed)
    return Path(path), time.perf_counter() - t0


def _pretrain(cfg: QuickstartConfig, stores: list[Path], out: Path) -> tuple[Path, float]:
    """Pretrain on the mixture (all2all pairs); reuse ``out/pretrained.ckpt`` if a previous run finished."""
    ckpt = out / "pretrained.ckpt"
    if ckpt.is_file():
        return ckpt, 0.0
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from sciformer.data.fields import FieldDataModule
    from sciformer.io import atomic_path
    from sciformer.tasks.operator import OperatorTask

    t0 = time.perf_counter()
    L.seed_everything(cfg.seed, verbose=False)
    dm = FieldDataModule(stores=[str(s) for s in stores], sampler="all2all", batch_size=cfg.batch_size,
                         time_stride=cfg.time_stride, max_snapshots=cfg.max_snapshots, seed=cfg.seed)
    task = OperatorTask(model=cfg.model, model_options=cfg.model_options, lr=cfg.lr, warmup_steps=50,
                        min_lr_ratio=0.05, data_spec=dm.spec)
    trainer = L.Trainer(max_epochs=cfg.pretrain_epochs, max_time={"minutes": cfg.pretrain_minutes},
                        logger=CSVLogger(out, name="pretrain", version=0),
                        enable_checkpointing=False, enable_model_summary=False, gradient_clip_val=1.0,
                        log_every_n_steps=5, accelerator="auto", devices=1)
    trainer.fit(task, datamodule=dm)
    with atomic_path(ckpt) as tmp:
        trainer.save_checkpoint(tmp, weights_only=True)
    return ckpt, time.perf_counter() - t0


def _validation_curve(metrics_csv: Path) -> list[dict[str, float]]:
    """Per-epoch validation error of the model and of persistence, from Lightning's CSV log."""
    rows = []
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("val/median_rel_l1"):
                rows.append({"epoch": int(row["epoch"]), "model": float(row["val/median_rel_l1"]),
                             "persistence": float(row.get("val/median_rel_l1_persistence") or "nan")})
    return rows


def _plot_curve(curve: list[dict[str, float]], path: Path) -> None:
    from sciformer import report

    fig, axes = report.figure(1, 1, 5, 3.5)
    ax = axes[0, 0]
    epochs = [r["epoch"] + 1 for r in curve]
    ax.plot(epochs, [r["model"] for r in curve], marker="o", label="pretrained model")
    ax.plot(epochs, [r["persistence"] for r in curve], ls="--", label="persistence (copy the input)")
    ax.set(xlabel="epoch", ylabel="val median rel. L1 (%)", title="pretraining on the NS mixture")
    ax.legend()
    report.save_figure(fig, path)


def run(cfg: QuickstartConfig, out: Path) -> Path:
    """Run every stage, write ``out/report.md``; return its path."""
    from sciformer.finetune import SweepConfig, sweep
    from sciformer.rollout import rollout

    out = Path(out)
    cfg_file, want = out / "quickstart_config.json", json.loads(json.dumps(dataclasses.asdict(cfg)))
    if cfg_file.is_file() and json.loads(cfg_file.read_text()) != want:  # finished stages belong to that config
        raise SciformerError(f"{out} holds a quickstart run with other settings ({cfg_file}); use another --out")
    write_json(cfg_file, want)
    data_dir, timings = out / "data", {}
    pre_stores = []
    for i, (name, n) in enumerate(cfg.pretrain_data.items()):
        path, timings[f"build {name}"] = _build(name, data_dir / f"{name}.zarr", n, cfg.resolution, cfg.seed + i)
        pre_stores.append(path)
    down, timings[f"build {cfg.downstream}"] = _build(cfg.downstream, data_dir / f"{cfg.downstream}.zarr",
                                                      cfg.downstream_trajectories, cfg.resolution, cfg.seed + 100)
    ckpt, timings["pretrain"] = _pretrain(cfg, pre_stores, out)
    curve = _validation_curve(out / "pretrain" / "version_0" / "metrics.csv")
    if curve:
        _plot_curve(curve, out / "pretrain_curve.png")

    t0 = time.perf_counter()
    sweep_cfg = SweepConfig(samples=cfg.samples, baselines=["scratch"], seeds=[cfg.seed], epochs=cfg.finetune_epochs,
                            batch_size=min(cfg.batch_size, 16), lr=5e-4, lr_embedding_recovery=2e-3,
                            lr_time_embedding=2e-3, scratch_lr=cfg.lr, time_stride=cfg.finetune_time_stride)
    summary = sweep(ckpt, down, sweep_cfg, out / f"finetune-{cfg.downstream}")
    timings["fine-tune sweep"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    n = max(cfg.samples)
    rollouts = {}
    for kind in ("finetuned", "scratch"):
        cell = out / f"finetune-{cfg.downstream}" / "cells" / f"n={n}" / kind / f"seed={cfg.seed}" / "model.ckpt"
        if cell.is_file():
            rollout(ckpt=cell, data=down, split="test", mode="ar", stride=cfg.finetune_time_stride,
                    out=out / "rollout" / kind / "rollout.zarr")
            rollouts[kind] = json.loads((out / "rollout" / kind / "summary.json").read_text())
    timings["rollout"] = time.perf_counter() - t0
    path = _write_report(cfg, out, curve, summary, rollouts, timings)
    return path


def _write_report(cfg, out: Path, curve, summary, rollouts, timings) -> Path:
    from sciformer.io import atomic_path
    from sciformer.report import markdown_table

    lines = ["# sciformer quickstart (tiny CPU demo)", "",
             f"Pretraining: `{cfg.model}` ({json.dumps(cfg.model_options)}) on {', '.join(cfg.pretrain_data)} "
             f"({sum(cfg.pretrain_data.values())} trajectories, {cfg.resolution}², all2all), {len(curve)} epochs (of "
             f"{cfg.pretrain_epochs}, capped at {cfg.pretrain_minutes:g} min). Downstream: `{cfg.downstream}` (different physics), {cfg.finetune_epochs} epochs per cell, "
             f"seed {cfg.seed}. A pipeline demo, not an accuracy claim.", ""]
    if curve:
        lines += ["## Pretraining (validation, median relative L1 %, normalised fields)", "",
                  markdown_table([curve[0], curve[-1]], floatfmt=".2f"), "", "![](pretrain_curve.png)", ""]
    lines += ["## Fine-tuning vs from scratch (test split, median relative L1 %)", ""]
    rows = []
    for n in cfg.samples:
        ft, sc = summary["table"]["finetuned"].get(n), summary["table"]["scratch"].get(n)
        rows.append({"trajectories": n, "fine-tuned": ft and ft["mean"], "scratch": sc and sc["mean"],
                     "AG": summary["gains"].get("scratch", {}).get("AG", {}).get(n)})
    lines += [markdown_table(rows, floatfmt=".3g"), "", f"![](finetune-{cfg.downstream}/error_vs_samples.png)", ""]
    if rollouts:
        lines += [f"## Autoregressive rollout on the test split (models trained on {max(cfg.samples)} "
                  "trajectories; physical units)", ""]
        rows = []
        for kind, s in rollouts.items():
            vr = s.get("per_step", {}).get("vrmse", {}).get("mean", [])
            base = s["baseline_persistence"]["per_step"]["vrmse"]["mean"]
            rows.append({"model": kind, "steps": s["steps"], "VRMSE first step": vr[0], "VRMSE last step": vr[-1],
                         "persistence VRMSE last step": base[-1],
                         "correlation time (steps)": s["correlation_time"]["step"] or f"> {s['steps']}"})
        lines += [markdown_table(rows, floatfmt=".3g"), "", "![](rollout/finetuned/error_growth.png)", ""]
    lines += ["## Time per stage", "", markdown_table([{"stage": k, "seconds": v} for k, v in timings.items()],
                                                      floatfmt=".0f"), ""]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines))
    return out / "report.md"


def quickstart(out: Path = Path("runs/quickstart"), model: str | None = None, resolution: int | None = None,
               pretrain_epochs: int | None = None, finetune_epochs: int | None = None) -> None:
    """Build data, pretrain a tiny operator model, fine-tune it on different physics against from-scratch
    training, roll both out, and write a report (about 5 minutes on 2 CPU cores).

    Example:
        sciformer quickstart
        sciformer quickstart --out runs/demo --pretrain_epochs 20

    Args:
        out: output directory (rerunning resumes: finished stages are reused).
        model: registered model name (default: a tiny scOT).
        resolution: grid size of the built data.
        pretrain_epochs: pretraining epochs.
        finetune_epochs: epochs per fine-tuning cell (fine-tuned and scratch get the same).
    """
    cfg = QuickstartConfig()
    for name, value in {"resolution": resolution, "pretrain_epochs": pretrain_epochs,
                        "finetune_epochs": finetune_epochs}.items():
        if value is not None:
            setattr(cfg, name, value)
    if model is not None and model != cfg.model:
        cfg.model, cfg.model_options = model, {}
    t0 = time.perf_counter()
    path = run(cfg, out)
    print(path.read_text())
    print(f"quickstart finished in {time.perf_counter() - t0:.0f} s; report: {path}; all outputs under {out}/")
