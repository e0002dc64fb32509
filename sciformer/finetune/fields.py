"""Field stores: fine-tune an operator model over training-trajectory counts, against the checkpoint's fresh
twin and neuraloperator's FNO, scored by Poseidon's median relative L1 and physics-aware metrics."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sciformer import checkpoints
from sciformer.adaptation import merged_stats
from sciformer.finetune.config import SweepConfig, SweepKind
from sciformer.finetune.report import cell_key
from sciformer.finetune.training import train_and_test


def run_cell(ckpt: Path, data: Path, n: int, kind: str, seed: int, cfg: SweepConfig, workdir: Path) -> dict:
    """Train one model (fine-tuned or a baseline) on ``n`` training trajectories and test it (the caller seeds)."""
    from sciformer.data.fields import FieldDataModule
    from sciformer.tasks.operator import OperatorTask

    ck = checkpoints.read(ckpt, kind="operator")
    common = {"stores": [str(data)], "sampler": cfg.sampler, "time_stride": cfg.time_stride,
              "normalization": cfg.normalization if kind == "finetuned" else "zscore"}
    stats = merged_stats(ck.data_spec, FieldDataModule(**common).spec["stats"]) if kind == "finetuned" else None
    dm = FieldDataModule(**common, batch_size=cfg.batch_size, num_workers=cfg.num_workers, train_trajectories=n,
                         stats=stats, seed=seed)
    recorded = {}
    if kind == "finetuned":
        options = dict(cfg.task_options or {})
        target = options.get("target") or ck.data_spec.get("target", "state")
        if dm.spec.get("steady") and target == "delta":  # no increment exists for a steady solution
            options["target"], recorded = "state", {"target": "state", "target_fallback": "delta -> state (steady store)"}
        task = OperatorTask(model=ck.model_name, pretrained=str(ckpt), finetune_mode=cfg.mode, lr=cfg.lr,
                            lr_embedding_recovery=cfg.lr_embedding_recovery, lr_time_embedding=cfg.lr_time_embedding,
                            loss=cfg.loss, data_spec=dm.spec, **options)
    elif kind == "scratch":  # the checkpoint's fresh twin: same architecture, fresh weights, any source
        name, arch = ck.twin()
        task = OperatorTask(model=name, model_options=arch, lr=cfg.scratch_lr, loss=cfg.loss, data_spec=dm.spec)
    else:  # "fno" (SweepConfig refuses other names)
        task = OperatorTask(model=cfg.fno_model, lr=cfg.scratch_lr, loss=cfg.loss, data_spec=dm.spec)
    metrics = train_and_test(task, dm, cfg, workdir / cell_key(n, kind, seed), gradient_clip_val=5.0)
    own = FieldDataModule(**{**common, "normalization": "zscore"}).spec["stats"]
    return (metrics | physics_metrics(task.model, dm, data) | zscore_error(task.model, task.groups, dm, own)
            | recorded)


def zscore_error(predict, groups, dm, stats) -> dict[str, float]:
    """The headline error re-scored on ``stats`` (the store's own z-score statistics, the baselines' scale):
    a cell normalised otherwise (merged checkpoint statistics, RMS) is compared with the baselines on this one.
    ``predict(x, t)`` gives normalised outputs; key ``zscore/median_rel_l1``."""
    from sciformer.data.normalization import Normalizer
    from sciformer.metrics.fields import GroupRelativeError

    outputs = list(dm.spec["outputs"])
    own, ref = Normalizer(dm.spec["stats"]), Normalizer(stats)
    mean, std = (torch.from_numpy(a) for a in ref.channel_arrays(outputs))

    def rescale(a: torch.Tensor) -> torch.Tensor:
        shape = (1, len(outputs)) + (1,) * (a.ndim - 2)
        return (own.denormalize_channels(a.double(), outputs) - mean.view(shape)) / std.view(shape)

    metric = GroupRelativeError(groups)
    if isinstance(predict, nn.Module):
        predict.eval()
    with torch.inference_mode():
        for batch in dm.test_dataloader():
            y = batch["y"]
            mask = batch.get("mask", torch.ones(y.shape[:2]))
            metric.update(rescale(predict(batch["x"], batch.get("t"))), rescale(y), mask)
    return {"zscore/median_rel_l1": float(metric.compute()["median"].nanmean())}


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


def variables(ck, data: Path, cfg: SweepConfig) -> dict[str, list[str]]:
    """Which of the store's variables the checkpoint knows (their channels are reused) and which are new."""
    from sciformer.data.fields import FieldDataModule

    spec = FieldDataModule(stores=[str(data)], sampler=cfg.sampler, time_stride=cfg.time_stride).spec
    out = {}
    for side in ("inputs", "outputs"):
        known = set(ck.data_spec.get(side) or [])
        out[f"{side}_reused"] = [v for v in spec[side] if v in known]
        out[f"{side}_new"] = [v for v in spec[side] if v not in known]
    return out



PHYSICS_DEFINITIONS = {
    "vrmse": "VRMSE (The Well): sqrt(mean (ŷ−y)² / (var y + 1e-7)) per channel, physical units, mean over test pairs.",
    "nrmse": "nRMSE (PDEBench): sqrt(mean (ŷ−y)²) / sqrt(mean y²) per channel, mean over test pairs.",
    "energy_spectrum_error": "energy-spectrum error: Σ_k |E_pred(k) − E_true(k)| / Σ_k E_true(k) over isotropic shells.",
    "boundary_rmse": "RMSE on the boundary points of the non-periodic axes (physical units).",
    "divergence_pred": "RMS divergence of the predicted velocity (physical units; compare with divergence_data).",
    "median_rel_l1": "the headline error re-scored on the store's own z-score statistics (the baselines' scale), "
                     "so cells normalised otherwise compare on one scale.",
    "divergence_data": "RMS divergence of the data's velocity at the same resolution (the floor for divergence_pred).",
}

METRIC = "test/median_rel_l1"  # Poseidon's headline: median over samples of the relative L1 (%), mean over groups

KIND = SweepKind(
    layout="fields", model_kind="operator", unit="training trajectories", metric=METRIC,
    metric_text="median over test samples of the relative L1 error in percent on normalised fields (Poseidon's "
                "convention), mean over channel groups",
    baselines=("scratch", "fno"), defaults={"baselines": ["scratch"], "lr": 5e-5, "scratch_lr": 5e-4, "batch_size": 16},
    run_cell=run_cell, variables=variables, tables=("phys/", "zscore/", f"{METRIC}/"), definitions=PHYSICS_DEFINITIONS)
