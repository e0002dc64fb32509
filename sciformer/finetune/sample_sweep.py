"""The sample-count sweep behind ``sciformer finetune``: every cell (samples × model × seed) trained with the
same budget and scored on the same test split; resumable; a baseline for every checkpoint source."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sciformer import checkpoints
from sciformer.adaptation import check_mode, merged_stats
from sciformer.errors import SciformerError
from sciformer.finetune.report import cell_key, summarise, write_report


@dataclass
class SweepConfig:
    """What every cell of a sweep gets: the same budget and evaluation for the fine-tuned model and baselines."""

    samples: list[int]
    baselines: list[str]
    seeds: list[int]
    epochs: int = 20
    batch_size: int = 16
    mode: str = "full"
    lr: float = 5e-5
    lr_embedding_recovery: float = 5e-4
    lr_time_embedding: float = 5e-4
    scratch_lr: float = 5e-4
    sampler: str = "all2all"
    time_stride: int = 1  # use every k-th stored snapshot (all2all pairs grow with the square of the count)
    precision: str = "32-true"
    num_workers: int = 0
    loss: str = "rel_l1"
    fno_model: str = "fno-2d"  # registered FNO size of the "fno" baseline (neuraloperator)


    def __post_init__(self):  # refused before any training starts
        check_mode(self.mode)
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise SciformerError(f"unknown baseline(s) {unknown}; choose from {', '.join(BASELINES)}")
        if not self.samples or min(self.samples) < 1:
            raise SciformerError(f"--samples must list positive trajectory counts, got {self.samples}")
        if not self.seeds:
            raise SciformerError("--seeds must list at least one seed")


BASELINES = ("scratch", "fno")


def run_cell(ckpt: Path, data: Path, n: int, kind: str, seed: int, cfg: SweepConfig, workdir: Path) -> dict:
    """Train one model (fine-tuned or a baseline) on ``n`` training trajectories and test it."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from sciformer.data.fields import FieldDataModule
    from sciformer.io import atomic_path
    from sciformer.tasks.operator import OperatorTask

    L.seed_everything(seed, verbose=False)
    ck = checkpoints.read(ckpt, kind="operator")
    common = {"stores": [str(data)], "sampler": cfg.sampler, "time_stride": cfg.time_stride}
    stats = merged_stats(ck.data_spec, FieldDataModule(**common).spec["stats"]) if kind == "finetuned" else None
    dm = FieldDataModule(**common, batch_size=cfg.batch_size, num_workers=cfg.num_workers, train_trajectories=n,
                         stats=stats, seed=seed)
    if kind == "finetuned":
        task = OperatorTask(model=ck.model_name, pretrained=str(ckpt), finetune_mode=cfg.mode, lr=cfg.lr,
                            lr_embedding_recovery=cfg.lr_embedding_recovery, lr_time_embedding=cfg.lr_time_embedding,
                            loss=cfg.loss, data_spec=dm.spec)
    elif kind == "scratch":  # the checkpoint's fresh twin: same architecture, fresh weights, any source
        name, arch = ck.twin()
        task = OperatorTask(model=name, model_options=arch, lr=cfg.scratch_lr, loss=cfg.loss, data_spec=dm.spec)
    else:  # "fno" (SweepConfig refuses other names)
        task = OperatorTask(model=cfg.fno_model, lr=cfg.scratch_lr, loss=cfg.loss, data_spec=dm.spec)
    trainer = L.Trainer(max_epochs=cfg.epochs, logger=CSVLogger(workdir, name=cell_key(n, kind, seed)),
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        precision=cfg.precision, accelerator="auto", devices=1, num_sanity_val_steps=0,
                        gradient_clip_val=5.0, deterministic=False)
    trainer.fit(task, datamodule=dm)
    metrics = trainer.test(task, datamodule=dm, verbose=False)[0]
    metrics |= physics_metrics(task.model, dm, data)
    with atomic_path(workdir / cell_key(n, kind, seed) / "model.ckpt") as tmp:  # for rollout / export
        trainer.save_checkpoint(tmp, weights_only=True)
    return {k: float(v) for k, v in metrics.items()}


def physics_metrics(model: nn.Module, dm, store: Path) -> dict[str, float]:
    """Test-split metrics on de-normalised (physical) fields, the ones the store's metadata make applicable
    (``plan_metrics``): VRMSE, nRMSE, energy-spectrum error, boundary RMSE on walls, divergence of predicted
    velocity (beside the data's own). Means over test pairs and scored channels; keys ``phys/<metric>``."""
    from sciformer.data.normalization import Normalizer
    from sciformer.data.store import open_store
    from sciformer.metrics.fields import boundary_rmse, nrmse, vrmse
    from sciformer.metrics.physics import divergence_rms, plan_metrics
    from sciformer.metrics.spectra import energy_spectrum_error

    outputs = list(dm.spec["outputs"])
    plan = plan_metrics(open_store(store), variables=outputs)
    norm = Normalizer(dm.spec["stats"])
    vals: dict[str, list[torch.Tensor]] = {}
    model.eval()
    with torch.inference_mode():
        for batch in dm.test_dataloader():
            pred = norm.denormalize_channels(model(batch["x"], batch.get("t")).double(), outputs)
            y = norm.denormalize_channels(batch["y"].double(), outputs)
            scored = batch["mask"].bool().any(0) if "mask" in batch else torch.ones(len(outputs), dtype=torch.bool)
            pred, y = pred[:, scored], y[:, scored]
            per = {"vrmse": vrmse(pred, y), "nrmse": nrmse(pred, y), "energy_spectrum_error": energy_spectrum_error(pred, y)}
            if "boundary_rmse" in plan.applies:
                per["boundary_rmse"] = boundary_rmse(pred, y, plan.applies["boundary_rmse"]["axes"])
            if "divergence" in plan.applies:
                opt = plan.applies["divergence"]
                idx = [[o for o, keep in zip(outputs, scored) if keep].index(v) for v in opt["velocity"]]
                per["divergence_pred"] = divergence_rms(pred[:, idx], opt["spacing"], opt["periodic"])
                per["divergence_data"] = divergence_rms(y[:, idx], opt["spacing"], opt["periodic"])
            for k, v in per.items():
                vals.setdefault(k, []).append(v.reshape(v.shape[0], -1).mean(1))
    return {f"phys/{k}": float(torch.cat(v).nanmean()) for k, v in vals.items()}


EXTENDABLE = ("samples", "seeds", "baselines", "num_workers")


def shared_variables(pretrained_spec: dict, data: Path, cfg: SweepConfig) -> dict[str, list[str]]:
    """Which of the store's variables the checkpoint knows (their channels are reused) and which are new."""
    from sciformer.data.fields import FieldDataModule

    spec = FieldDataModule(stores=[str(data)], sampler=cfg.sampler, time_stride=cfg.time_stride).spec
    out = {}
    for side in ("inputs", "outputs"):
        known = set(pretrained_spec.get(side) or [])
        out[f"{side}_reused"] = [v for v in spec[side] if v in known]
        out[f"{side}_new"] = [v for v in spec[side] if v not in known]
    return out


def _check_same_sweep(state: dict, ckpt: Path, data: Path, cfg: SweepConfig, results_file: Path) -> None:
    """Refuse to resume finished cells that were made with another checkpoint, store or budget."""
    if not state:
        return
    old = {"ckpt": state.get("ckpt"), "data": state.get("data"),
           **{k: v for k, v in state.get("config", {}).items() if k not in EXTENDABLE}}
    new = {"ckpt": str(ckpt), "data": str(data),
           **{k: v for k, v in dataclasses.asdict(cfg).items() if k not in EXTENDABLE}}
    changed = [k for k in new if k in old and old[k] != new[k]]
    if changed:
        diff = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in changed)
        raise SciformerError(f"{results_file} holds a sweep with other settings ({diff}); write to another --out, "
                             "or delete it to start over")


def sweep(ckpt: Path, data: Path, cfg: SweepConfig, out: Path) -> dict:
    """Run (or resume) every cell; write results.json after each cell, then report.md and plots."""
    import json

    from rich.progress import Progress

    from sciformer.data.store import open_store
    from sciformer.io import write_json

    ck = checkpoints.read(ckpt, kind="operator")  # a wrong checkpoint or store fails here, once, not in every cell
    ck.build()
    open_store(data)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    state = json.loads(results_file.read_text()) if results_file.is_file() else {}
    _check_same_sweep(state, ckpt, data, cfg, results_file)
    cells, skipped = state.get("cells", {}), state.get("skipped", {})
    remaining = [(n, kind, seed) for n in cfg.samples for kind in ["finetuned", *cfg.baselines] for seed in cfg.seeds
            if cell_key(n, kind, seed) not in cells]
    meta = {"ckpt": str(ckpt), "data": str(data), "config": dataclasses.asdict(cfg),
            "variables": shared_variables(ck.data_spec, data, cfg)}
    with Progress() as progress:
        bar = progress.add_task("fine-tuning sweep", total=len(remaining))
        for n, kind, seed in remaining:
            key = cell_key(n, kind, seed)
            progress.update(bar, description=f"sweep {key}")
            try:
                cells[key] = run_cell(ckpt, data, n, kind, seed, cfg, out / "cells")
                skipped.pop(key, None)
            except SciformerError as e:  # e.g. more samples than training trajectories: skip, keep going
                skipped[key] = str(e)
                progress.console.print(f"[yellow]skipped {key}: {e}")
            write_json(results_file, {**meta, "cells": cells, "skipped": skipped})
            progress.advance(bar)
    summary = summarise(cells, cfg)
    write_json(results_file, {**meta, "cells": cells, "skipped": skipped, "summary": summary})
    write_report(out, summary, cfg, meta)
    return summary
