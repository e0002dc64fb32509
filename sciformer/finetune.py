"""Adapting a pretrained operator model to a data set with other variables.

Variables are matched by name (DECISIONS): an input or output channel of the pretrained embedding/recovery is
reused only when the target data has a variable of the same name; every other channel slice is freshly
initialised, and every tensor whose shape does not depend on channels is copied unchanged. The report says
which tensors were copied, partly copied (by channel) or re-initialised.

Normalisation statistics travel with the checkpoint: variables it knows keep its statistics; new ones take the
target store's (``merged_stats``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sciformer import models
from sciformer.errors import CheckpointError
from sciformer.nn.lora import apply_lora

log = logging.getLogger(__name__)

MODES = ("full", "frozen-latent", "lora")
# Parameter-name prefixes of the channel-dependent parts (patch embedding / recovery head).
INPUT_PREFIXES = ("embeddings.",)
OUTPUT_PREFIXES = ("patch_recovery.", "recovery.")
LORA_TARGETS = r"(attention|attn|mlp|ffn|intermediate|output\.dense|query|key|value|qkv|proj)"


@dataclass
class Pretrained:
    """A pretrained model as plain data: its class, config, weights and the data spec it was trained on."""

    model_class: str
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    data_spec: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    model_name: str | None = None  # registered size it was built from, if known


def load_pretrained(path: str | Path) -> Pretrained:
    """Read a Lightning checkpoint (``.ckpt``) or an export/convert directory, never unpickling code."""
    path = Path(path)
    if path.is_dir():
        from safetensors.torch import load_file

        from sciformer.models.export import read_config

        meta = read_config(path)
        return Pretrained(meta["class"], meta["config"], load_file(path / "model.safetensors"),
                          meta.get("data_spec") or {}, str(path), meta.get("model_name"))
    from sciformer.checkpoints import read_checkpoint

    ckpt = read_checkpoint(path)
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    desc = ckpt["sciformer_model"]
    hp = ckpt.get("hyper_parameters", {})
    return Pretrained(desc["class"], desc["config"], state, hp.get("data_spec") or {}, str(path), hp.get("model"))


def merged_stats(pretrained_spec: dict[str, Any], target_stats: dict[str, Any]) -> dict[str, Any]:
    """Checkpoint statistics for variables it knows, the target store's for new ones."""
    known = (pretrained_spec or {}).get("stats", {})
    return {name: known.get(name, s) for name, s in target_stats.items()}


def _channel_map(old: list[str], new: list[str]) -> list[tuple[int, int]]:
    """(new index, old index) pairs of variables present in both, by name."""
    return [(j, old.index(n)) for j, n in enumerate(new) if n in old]


def _copy_by_channel(fresh: torch.Tensor, old: torch.Tensor, dims: list[int], pairs: list[tuple[int, int]]):
    """Copy ``old`` into ``fresh`` for the channel pairs along ``dims`` (all other dims must agree)."""
    out = fresh.clone()
    if len(dims) == 1:
        d = dims[0]
        for j, i in pairs:
            out.select(d, j).copy_(old.select(d, i))
    else:  # two channel dims (e.g. an output-to-output mixing conv)
        d0, d1 = dims
        for j0, i0 in pairs:
            for j1, i1 in pairs:
                out.select(d0, j0).select(d1 - 1, j1).copy_(old.select(d0, i0).select(d1 - 1, i1))
    return out


def adapt(pretrained: Pretrained, target_spec: dict[str, Any], mode: str = "full", lora_rank: int = 8,
          **config_overrides) -> tuple[nn.Module, dict[str, list[str]]]:
    """Build the pretrained architecture for ``target_spec``'s channels and fill it from the checkpoint."""
    if mode not in MODES:
        raise ValueError(f"finetune mode must be one of {MODES}, not {mode!r}")
    cls = models.model_class(pretrained.model_class)
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    cfg = {k: v for k, v in pretrained.config.items() if k in fields}
    old_in = list(pretrained.data_spec.get("inputs") or [])
    old_out = list(pretrained.data_spec.get("outputs") or [])
    new_in, new_out = list(target_spec.get("inputs") or []), list(target_spec.get("outputs") or [])
    if "spatial_shape" in target_spec and "spatial_shape" in pretrained.data_spec:
        if len(target_spec["spatial_shape"]) != len(pretrained.data_spec["spatial_shape"]):
            raise CheckpointError(
                f"{pretrained.source}: pretrained on {len(pretrained.data_spec['spatial_shape'])}D grids, the data "
                f"is {len(target_spec['spatial_shape'])}D; choose a checkpoint of the same dimensionality"
            )
    if "in_channels" in target_spec:
        cfg["in_channels"], cfg["out_channels"] = target_spec["in_channels"], target_spec["out_channels"]
    cfg.update(config_overrides)
    model = cls(cls.config_class(**cfg))
    fresh = model.state_dict()
    report: dict[str, list[str]] = {"copied": [], "copied_by_channel": [], "reinitialised": [], "dropped": []}
    state = {}
    for name, tensor in fresh.items():
        old = pretrained.state.get(name)
        dims, pairs = _channel_dims(name, tensor, old, old_in, new_in, old_out, new_out)
        if dims and pairs:
            state[name] = _copy_by_channel(tensor, old, dims, pairs)
            full = old.shape == tensor.shape and len(pairs) == tensor.shape[dims[0]] and all(i == j for j, i in pairs)
            report["copied" if full else "copied_by_channel"].append(name)
        elif not dims and old is not None and old.shape == tensor.shape:
            state[name] = old
            report["copied"].append(name)
        else:
            state[name] = tensor
            report["reinitialised"].append(name)
    report["dropped"] = sorted(set(pretrained.state) - set(fresh))
    model.load_state_dict(state)
    if mode == "frozen-latent":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(INPUT_PREFIXES + OUTPUT_PREFIXES))
    elif mode == "lora":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(INPUT_PREFIXES + OUTPUT_PREFIXES))
        report["lora"] = apply_lora(model, LORA_TARGETS, rank=lora_rank)
    log.info(
        "adapted %s: %d tensors copied, %d copied by channel name (%s), %d re-initialised (%s)",
        pretrained.source, len(report["copied"]), len(report["copied_by_channel"]),
        ", ".join(report["copied_by_channel"]), len(report["reinitialised"]), ", ".join(report["reinitialised"]),
    )
    return model, report


def _channel_dims(name, tensor, old, old_in, new_in, old_out, new_out):
    """Which dims of a channel-dependent tensor index variables, and the (new, old) index pairs by name."""
    if old is None or old.ndim != tensor.ndim:
        return [], []
    if name.startswith(INPUT_PREFIXES) and old_in and new_in:
        old_n, new_n, pairs = len(old_in), len(new_in), _channel_map(old_in, new_in)
    elif name.startswith(OUTPUT_PREFIXES) and old_out and new_out:
        old_n, new_n, pairs = len(old_out), len(new_out), _channel_map(old_out, new_out)
    else:
        return [], []
    # channels index one of the first two dims (conv/linear weights, biases), never kernel dims
    dims = [d for d in range(min(2, tensor.ndim)) if old.shape[d] == old_n and tensor.shape[d] == new_n]
    others_agree = all(old.shape[d] == tensor.shape[d] for d in range(tensor.ndim) if d not in dims)
    return (dims, pairs) if dims and others_agree else ([], [])


# ---- gains over a sample-count sweep (Poseidon's definitions) -------------------------------------------
def accuracy_gain(eps_baseline: float, eps_model: float) -> float:
    """AG_S = ε_S(baseline) / ε_S(model): how many times smaller the model's error is at the same S."""
    return eps_baseline / eps_model


def efficiency_gain(samples: list[int], eps_model: list[float], eps_target: float, S: int) -> tuple[float, str]:
    """EG_S = S / s, where s is the sample count at which the model's error curve reaches ``eps_target`` (the
    baseline's error at S), interpolated linearly in log–log between sweep points.

    Returns (value, text). If the model beats the target already at the smallest count s_min, s is below the
    sweep: the value is the lower bound S / s_min and the text says "> S/s_min". If it never reaches it,
    the value is NaN and the text says so.
    """
    import math

    pts = sorted(zip(samples, eps_model))
    if pts[0][1] <= eps_target:
        bound = S / pts[0][0]
        return bound, f"> {bound:.3g}"
    for (s0, e0), (s1, e1) in zip(pts, pts[1:]):
        if e0 > eps_target >= e1:
            ls0, ls1, le0, le1 = map(math.log, (s0, s1, e0, e1))
            s = math.exp(ls0 + (math.log(eps_target) - le0) * (ls1 - ls0) / (le1 - le0))
            return S / s, f"{S / s:.3g}"
    return float("nan"), "not reached in the sweep"


# ---- the sample-count sweep behind `sciformer finetune` --------------------------------------------------
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


BASELINES = ("scratch", "fno")


def _cell_key(n: int, kind: str, seed: int) -> str:
    return f"n={n}/{kind}/seed={seed}"


def run_cell(ckpt: Path, data: Path, n: int, kind: str, seed: int, cfg: SweepConfig, workdir: Path) -> dict:
    """Train one model (fine-tuned or a baseline) on ``n`` training trajectories and test it."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from sciformer.data.fields import FieldDataModule
    from sciformer.io import atomic_path
    from sciformer.tasks.operator import OperatorTask

    L.seed_everything(seed, verbose=False)
    pre = load_pretrained(ckpt)
    common = {"stores": [str(data)], "sampler": cfg.sampler, "time_stride": cfg.time_stride}
    stats = merged_stats(pre.data_spec, FieldDataModule(**common).spec["stats"]) if kind == "finetuned" else None
    dm = FieldDataModule(**common, batch_size=cfg.batch_size, num_workers=cfg.num_workers, train_trajectories=n,
                         stats=stats, seed=seed)
    if kind == "finetuned":
        task = OperatorTask(model=pre.model_name, pretrained=str(ckpt), finetune_mode=cfg.mode, lr=cfg.lr,
                            lr_embedding_recovery=cfg.lr_embedding_recovery, lr_time_embedding=cfg.lr_time_embedding,
                            loss=cfg.loss, data_spec=dm.spec)
    elif kind == "scratch":  # the same architecture, freshly initialised
        arch = {k: v for k, v in pre.config.items() if k not in ("in_channels", "out_channels")}
        task = OperatorTask(model=pre.model_name, model_options=arch, lr=cfg.scratch_lr, loss=cfg.loss,
                            data_spec=dm.spec)
    elif kind == "fno":
        task = OperatorTask(model=cfg.fno_model, lr=cfg.scratch_lr, loss=cfg.loss, data_spec=dm.spec)
    else:
        raise ValueError(f"unknown baseline {kind!r}; available: {BASELINES}")
    trainer = L.Trainer(max_epochs=cfg.epochs, logger=CSVLogger(workdir, name=_cell_key(n, kind, seed)),
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        precision=cfg.precision, accelerator="auto", devices=1, num_sanity_val_steps=0,
                        gradient_clip_val=5.0, deterministic=False)
    trainer.fit(task, datamodule=dm)
    metrics = trainer.test(task, datamodule=dm, verbose=False)[0]
    metrics |= physics_metrics(task.model, dm, data)
    with atomic_path(workdir / _cell_key(n, kind, seed) / "model.ckpt") as tmp:  # for rollout / export
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


METRIC = "test/median_rel_l1"  # Poseidon's headline: median over samples of the relative L1 (%), mean over groups


def summarise(cells: dict[str, dict], cfg: SweepConfig) -> dict:
    """Per sample count and model: mean and spread of the error over seeds; AG and EG of the fine-tuned model."""
    import statistics

    kinds = ["finetuned", *cfg.baselines]
    names = [METRIC, *sorted({k for c in cells.values() for k in c if k.startswith(("phys/", f"{METRIC}/"))})]
    tables: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    for metric in names:
        tables[metric] = {k: {} for k in kinds}
        for kind in kinds:
            for n in cfg.samples:
                vals = [v for s in cfg.seeds if (v := cells.get(_cell_key(n, kind, s), {}).get(metric)) is not None]
                if vals:
                    tables[metric][kind][n] = {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals),
                                               "seeds": len(vals)}
    table = tables[METRIC]
    gains: dict[str, dict] = {}
    model = table["finetuned"]
    for base in cfg.baselines:
        ns = [n for n in cfg.samples if n in model and n in table[base]]
        if not ns:
            continue
        S = max(ns)
        eg, eg_text = efficiency_gain([n for n in cfg.samples if n in model],
                                      [model[n]["mean"] for n in cfg.samples if n in model],
                                      table[base][S]["mean"], S)
        gains[base] = {
            "AG": {n: accuracy_gain(table[base][n]["mean"], model[n]["mean"]) for n in ns},
            "EG": {"S": S, "value": eg, "text": eg_text},
        }
    return {"metric": METRIC, "table": table, "gains": gains, "tables": tables}


def write_report(out: Path, summary: dict, cfg: SweepConfig, meta: dict) -> None:
    """``report.md`` (table of errors and gains) and ``error_vs_samples.png`` (log-log, one curve per model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sciformer.io import atomic_path

    table = summary["table"]
    lines = [f"# Fine-tuning sweep: {meta['data']}", "",
             f"Pretrained: `{meta['ckpt']}`. Budget per cell: {cfg.epochs} epochs, batch {cfg.batch_size}, "
             f"seeds {cfg.seeds}, mode {cfg.mode}.", "",
             f"Error: {METRIC} — median over test samples of the relative L1 error in percent on normalised fields "
             "(Poseidon's convention), mean over channel groups; mean ± std over seeds.", "",
             "| " + " | ".join(["samples", *table, *(f"AG vs {b}" for b in summary["gains"])]) + " |",
             "|---" * (1 + len(table) + len(summary["gains"])) + "|"]
    for n in cfg.samples:
        row = [str(n)]
        for kind in table:
            v = table[kind].get(n)
            row.append(f"{v['mean']:.2f} ± {v['std']:.2f}" if v else "—")
        for g in summary["gains"].values():
            row.append(f"{g['AG'][n]:.2f}" if n in g["AG"] else "—")
        lines.append("| " + " | ".join(row) + " |")
    for base, g in summary["gains"].items():
        lines.append("")
        lines.append(f"Efficiency gain vs {base} at S={g['EG']['S']}: EG = {g['EG']['text']} "
                     "(samples the baseline needs / samples the fine-tuned model needs for the same error).")
    for metric, tab in summary.get("tables", {}).items():
        if metric == METRIC:
            continue
        what = PHYSICS_DEFINITIONS.get(metric.split("/", 1)[1], "") if metric.startswith("phys/") else \
            f"median relative L1 (%) of channel group {metric.split('/')[-1]!r}"
        lines += ["", f"### {metric}", "", what, "", "| " + " | ".join(["samples", *tab]) + " |",
                  "|---" * (1 + len(tab)) + "|"]
        for n in cfg.samples:
            cellv = [tab[k].get(n) for k in tab]
            lines.append("| " + " | ".join([str(n), *(f"{v['mean']:.4g} ± {v['std']:.2g}" if v else "—"
                                                      for v in cellv)]) + " |")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    _plot_groups(summary.get("tables", {}), cfg, out / "error_by_channel_group.png")
    fig, ax = plt.subplots(figsize=(5, 4))
    for kind, rows in table.items():
        ns = sorted(rows)
        if ns:
            ax.errorbar(ns, [rows[n]["mean"] for n in ns], yerr=[rows[n]["std"] for n in ns], marker="o",
                        label=kind, capsize=3)
    ax.set(xscale="log", yscale="log", xlabel="training trajectories", ylabel="median rel. L1 error (%)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "error_vs_samples.png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


PHYSICS_DEFINITIONS = {
    "vrmse": "VRMSE (The Well): sqrt(mean (ŷ−y)² / (var y + 1e-7)) per channel, physical units, mean over test pairs.",
    "nrmse": "nRMSE (PDEBench): sqrt(mean (ŷ−y)²) / sqrt(mean y²) per channel, mean over test pairs.",
    "energy_spectrum_error": "energy-spectrum error: Σ_k |E_pred(k) − E_true(k)| / Σ_k E_true(k) over isotropic shells.",
    "boundary_rmse": "RMSE on the boundary points of the non-periodic axes (physical units).",
    "divergence_pred": "RMS divergence of the predicted velocity (physical units; compare with divergence_data).",
    "divergence_data": "RMS divergence of the data's velocity at the same resolution (the floor for divergence_pred).",
}


def _plot_groups(tables: dict, cfg: SweepConfig, path: Path) -> None:
    """Bars per channel group at the largest sample count every model reached (mean over seeds)."""
    from sciformer import report

    groups = {m.split("/")[-1]: t for m, t in tables.items() if m.startswith(f"{METRIC}/")}
    if not groups:
        return
    kinds = list(next(iter(groups.values())))
    ns = [n for n in cfg.samples if all(n in t[k] for t in groups.values() for k in kinds)]
    if not ns:
        return
    n = max(ns)
    fig, axes = report.figure(1, 1, 1.2 + 1.1 * len(groups), 3.2)
    ax, width = axes[0, 0], 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        ax.bar([g + i * width for g in range(len(groups))], [t[kind][n]["mean"] for t in groups.values()],
               width, yerr=[t[kind][n]["std"] for t in groups.values()], label=kind, capsize=2)
    ax.set_xticks([g + width * (len(kinds) - 1) / 2 for g in range(len(groups))], list(groups))
    ax.set(ylabel="median rel. L1 (%)", title=f"{n} training trajectories")
    ax.legend()
    report.save_figure(fig, path)


# Settings a resumed sweep may change (they add cells); every other one changes what a finished cell means.
EXTENDABLE = ("samples", "seeds", "baselines", "num_workers")


def _check_same_sweep(state: dict, ckpt: Path, data: Path, cfg: SweepConfig, results_file: Path) -> None:
    """Refuse to resume finished cells that were made with another checkpoint, store or budget."""
    from sciformer.errors import SciformerError

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
    from sciformer.errors import SciformerError
    from sciformer.io import write_json

    load_pretrained(ckpt)  # a wrong checkpoint or store path fails here, once, not in every cell
    open_store(data)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    state = json.loads(results_file.read_text()) if results_file.is_file() else {}
    _check_same_sweep(state, ckpt, data, cfg, results_file)
    cells, skipped = state.get("cells", {}), state.get("skipped", {})
    remaining = [(n, kind, seed) for n in cfg.samples for kind in ["finetuned", *cfg.baselines] for seed in cfg.seeds
            if _cell_key(n, kind, seed) not in cells]
    meta = {"ckpt": str(ckpt), "data": str(data), "config": dataclasses.asdict(cfg)}
    with Progress() as progress:
        bar = progress.add_task("fine-tuning sweep", total=len(remaining))
        for n, kind, seed in remaining:
            key = _cell_key(n, kind, seed)
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
