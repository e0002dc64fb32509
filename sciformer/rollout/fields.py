"""Field rollout (``sciformer rollout`` on a gridded store): roll an operator checkpoint out over a split's
trajectories with :class:`~sciformer.rollout.engine.RolloutEngine`, score every step, write the zarr dataset,
``summary.json`` and the plots. Series stores go to ``sciformer.rollout.series`` (``command`` chooses).
"""

from __future__ import annotations

import json
import time as _time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sciformer.checkpoints import load_model
from sciformer.errors import DataError, SciformerError
from sciformer.metrics import spectra
from sciformer.rollout.engine import RolloutEngine
from sciformer.rollout.metrics import (
    drift_summary,
    finite_or_none,
    mean_spectrum,
    spectrum_sums,
    step_metrics,
    summarize,
    trajectory_drift,
)
from sciformer.rollout.output import batch_dataset, default_plot_steps, write_plots
from sciformer.rollout.plan import snapshot_time


def split_ids(n: int, split: str, splits: Sequence[float]) -> list[int]:
    """Trajectory ids of ``split`` (train | val | test as in training, or all) among ``n`` trajectories."""
    from sciformer.data.samplers import split_trajectories

    if split == "all":
        return list(range(n))
    names = ("train", "val", "test")
    if split not in names:
        raise SciformerError(f"split must be one of {names} or 'all', not {split!r}")
    return list(split_trajectories(n, tuple(splits))[names.index(split)])


def rollout_fields(*, ckpt: Path, data: Path, split: str, steps: int | None, mode: str, jump: int, stride: int,
                   start: int, history: int | None, trajectories: int | None, batch_size: int, device: str,
                   bf16: bool, compile: bool, blowup_factor: float, correlation_threshold: float,
                   plot_steps: list[int] | None, pad_missing: bool, splits: tuple[float, float, float],
                   out: Path) -> Path:
    """Roll an operator checkpoint out over a field store's trajectories (the arguments of
    :func:`sciformer.rollout.command.rollout`); write OUT, summary.json and the plots; return OUT."""
    import zarr
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from sciformer.data.formats import open_source
    from sciformer.io import atomic_path, write_json

    out = Path(out)
    summary_path = out.parent / "summary.json"
    if summary_path.exists():
        try:
            other = json.loads(summary_path.read_text()).get("dataset")
        except (OSError, json.JSONDecodeError):
            other = None
        if other not in (None, out.name):
            raise SciformerError(f"{summary_path} belongs to another rollout ({other}); write each rollout to its "
                                 "own directory")
    model, spec = load_model(ckpt, kind="operator")
    source = open_source(data)
    engine = RolloutEngine(model, spec, source, mode=mode, jump=jump, stride=stride, history=history, start=start,
                           blowup_factor=blowup_factor, device=device, bf16=bf16, compile=compile,
                           pad_missing=pad_missing, where=str(ckpt))
    plan = engine.plan(steps)
    ids = split_ids(source.n_trajectories, split, splits)
    if trajectories is not None:
        ids = ids[: max(0, int(trajectories))]
    if not ids:
        raise DataError(f"{source.path}: the {split} split is empty ({source.n_trajectories} trajectories, "
                        f"splits {list(splits)})")
    n_truth = min(plan.steps, engine.available_steps())
    notes = []
    if plan.steps > n_truth:
        notes.append(f"snapshot times beyond the store's last ({source.time[-1]:g}) continue with its last spacing")
        notes.append(f"{plan.steps} steps requested but the store has ground truth for {n_truth}: steps "
                     f"{n_truth + 1}..{plan.steps} are predicted, not scored")
        print(f"sciformer rollout: note: {notes[-1]}")
    time = np.array([snapshot_time(source.time, plan.snapshot(s)) for s in range(1, plan.steps + 1)])
    shown = sorted({s for s in (plot_steps or default_plot_steps(plan.steps)) if 1 <= s <= plan.steps})
    variables = list(engine.layout.predicted)
    all_metrics: dict[str, list[np.ndarray]] = {}
    drifts: dict[str, list[np.ndarray]] = {}  # conservation drift of predictions and of the data [B, n, C]
    blowups: list[np.ndarray] = []
    snaps: dict[str, dict[str, list]] = {"truth": {}, "pred": {}}
    spec_acc: dict[str, dict[int, list]] = {v: {} for v in variables}
    batches = [ids[i:i + batch_size] for i in range(0, len(ids), batch_size)]
    t0 = _time.perf_counter()
    with atomic_path(out, is_dir=True) as tmp, Progress(
            TextColumn("rollout {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            transient=False) as bar:
        task = bar.add_task(f"({mode}, {len(ids)} trajectories)", total=plan.steps * len(batches))
        for b, traj in enumerate(batches):
            tr = engine.run(traj, plan.steps, on_step=lambda s: bar.advance(task))
            metrics = step_metrics(tr.pred[:, :n_truth], tr.truth) if n_truth else {}
            if n_truth:  # the copy-the-input baseline (DECISIONS: reported beside every model)
                base = step_metrics(np.broadcast_to(tr.initial[:, None], tr.truth.shape), tr.truth)
                metrics |= {f"persistence_{k}": v for k, v in base.items()}
            for k, v in metrics.items():
                all_metrics.setdefault(k, []).append(v)
            if n_truth and not source.steady:
                for who, frames in (("pred", tr.pred[:, :n_truth]), ("truth", tr.truth)):
                    drifts.setdefault(who, []).append(trajectory_drift(tr.initial, frames, len(source.axes)))
            blowups.append(tr.blowup_step)
            ds = batch_dataset(tr, source, plan, metrics, time)
            if b == 0:
                enc = {v: {"chunks": (1, 1, *source.spatial_shape)} for v in ds.data_vars
                       if ds[v].dims[-len(source.axes):] == tuple(source.axes) and "step" in ds[v].dims}
                ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, encoding=enc)
                for c, v in enumerate(variables):  # the snapshot grid shows the split's first trajectory
                    snaps["pred"][v] = [tr.pred[0, s - 1, c] for s in shown]
                    snaps["truth"][v] = [tr.truth[0, s - 1, c] if s <= n_truth else np.full_like(tr.pred[0, 0, c],
                                                                                               np.nan) for s in shown]
            else:
                ds.to_zarr(tmp, append_dim="trajectory", zarr_format=3, consolidated=False)
            for c, v in enumerate(variables):
                for s in shown:
                    if s <= n_truth:
                        spec_acc[v].setdefault(s, []).append(spectrum_sums(tr.truth[:, s - 1, c],
                                                                           tr.pred[:, s - 1, c]))
        wall = _time.perf_counter() - t0
        blowup = np.concatenate(blowups)
        metrics = {k: np.concatenate(v) for k, v in all_metrics.items()}
        summary = {}
        if n_truth:
            model_m = {k: v for k, v in metrics.items() if not k.startswith("persistence_")}
            base_m = {k[len("persistence_"):]: v for k, v in metrics.items() if k.startswith("persistence_")}
            summary = summarize(model_m, variables, blowup, time[:n_truth], correlation_threshold)
            summary["baseline_persistence"] = {
                "definition": "the initial condition copied to every step, scored like the model",
                **summarize(base_m, variables, np.zeros_like(blowup), time[:n_truth], correlation_threshold)}
            if drifts:
                summary["conservation_drift"] = drift_summary(drifts, variables)
        attrs = {
            "title": "sciformer rollout", "checkpoint": str(ckpt), "store": str(source.path), "split": split,
            "mode": mode, "jump": plan.k, "stride": stride, "start": start, "history": plan.history,
            "steps": plan.steps, "steps_with_truth": n_truth, "variables": variables,
            "static_inputs": list(engine.layout.static), "padded_inputs": list(engine.layout.padded),
            "lead_time_units": "fraction of the store's time span: (time[j] - time[i]) / (time[-1] - time[0])",
            "metrics_on": "de-normalised (physical) fields; steps with ground truth only",
            "blowup_rule": f"non-finite, or |prediction - mid| > {blowup_factor} x half of the trajectory's data "
                           "range (per variable)",
            "device": str(engine.device), "precision": "bf16 autocast" if bf16 else "float32",
            "compiled": bool(compile), "wall_seconds": wall, "notes": notes,
        }
        zarr.open_group(str(tmp), mode="r+").attrs.update(json.loads(json.dumps(attrs, default=float)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(str(tmp))
    summary = {"dataset": out.name, **attrs, "trajectories": [int(i) for i in ids],
               "blowups": {str(i): int(s) for i, s in zip(ids, blowup) if s}, **summary}
    mean_spectra = {v: {s: mean_spectrum(parts) for s, parts in spec_acc[v].items()} for v in variables}
    if any(mean_spectra.values()):
        summary["energy_spectrum_error"] = {
            "definition": "sum_k |E_pred(k) - E_true(k)| / sum_k E_true(k) of the isotropic spectra averaged over the "
                          "finite trajectories, at the plotted steps (keys: step)",
            **{v: {str(s): finite_or_none(spectra.spectrum_error(torch.from_numpy(ep), torch.from_numpy(et)))
                   for s, (_, et, ep) in sp.items()} for v, sp in mean_spectra.items() if sp}}
    write_json(summary_path, summary)
    title = f"{Path(str(ckpt)).name} on {Path(str(source.path)).name} ({split}, {mode})"
    write_plots(out.parent, title, summary, variables, mean_spectra, snaps, shown, ids[0], correlation_threshold,
                scored=bool(n_truth))
    print(f"sciformer rollout: wrote {out} and {summary_path} ({len(ids)} trajectories × {plan.steps} steps, "
          f"{wall:.1f} s)")
    return out
