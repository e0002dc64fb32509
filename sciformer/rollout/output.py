"""What a field rollout writes: one batch of trajectories as an xarray Dataset (appended to the zarr output)
and the plots beside it (error growth, snapshots, spectra).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sciformer.rollout.engine import TrajectoryRollout
from sciformer.rollout.plan import Plan


def default_plot_steps(steps: int) -> list[int]:
    return sorted({1, max(1, round(steps / 3)), max(1, round(2 * steps / 3)), steps})


def batch_dataset(tr: TrajectoryRollout, source, plan: Plan, metrics: dict[str, np.ndarray], time: np.ndarray):
    """One batch of trajectories as an xarray Dataset (prediction, truth, initial condition, metrics)."""
    import xarray as xr

    axes = list(source.axes)
    dims = ("trajectory", "step", *axes)
    n_truth = tr.truth.shape[1]
    data = {}
    for c, v in enumerate(tr.variables):
        units = source.units.get(v, "1") if hasattr(source, "units") else "1"
        data[v] = (dims, tr.pred[:, :, c], {"units": units, "long_name": f"predicted {v}"})
        true = np.full(tr.pred[:, :, c].shape, np.nan, np.float32)
        true[:, :n_truth] = tr.truth[:, :, c]
        data[f"{v}_true"] = (dims, true, {"units": units, "long_name": f"ground truth {v} (NaN: beyond the store)"})
        data[f"{v}_initial"] = (("trajectory", *axes), tr.initial[:, c], {"units": units,
                                                                          "long_name": f"initial condition of {v}"})
    for name, values in metrics.items():
        full = np.full((len(tr.trajectories), plan.steps, len(tr.variables)), np.nan)
        full[:, :n_truth] = values
        data[name] = (("trajectory", "step", "variable"), full, {"long_name": f"{name} per trajectory, step, variable "
                                                                             "(de-normalised fields)"})
    data["blowup_step"] = (("trajectory",), tr.blowup_step.astype(np.int64),
                           {"long_name": "first step flagged by the blow-up guard (0: none)"})
    coords = {"trajectory": np.array(tr.trajectories, np.int64), "step": np.arange(1, plan.steps + 1),
              "time": ("step", time), "lead_time": ("step", tr.lead), "variable": np.array(tr.variables, dtype=object),
              "has_truth": ("step", np.arange(1, plan.steps + 1) <= n_truth)}
    coords.update({a: np.asarray(source.coords[a]) for a in axes})
    return xr.Dataset(data, coords=coords)


def write_plots(directory: Path, title: str, summary: dict[str, Any], variables: Sequence[str],
                mean_spectra: dict[str, dict], snaps: dict[str, dict[str, list]], shown: Sequence[int],
                trajectory: int, correlation_threshold: float, scored: bool = True) -> None:
    """error_growth.png and spectra.png (only when steps were ``scored`` against ground truth) and
    snapshots.png (the split's first ``trajectory``) in ``directory``, from the summary and accumulators."""
    from sciformer import report

    if scored:
        per_step = {m: {v: np.array(summary["per_step"][m][v], dtype=float) for v in variables}
                    for m in ("vrmse", "nrmse", "correlation")}
        for m in per_step:
            per_step[m]["persistence (mean)"] = np.array(summary["baseline_persistence"]["per_step"][m]["mean"],
                                                         dtype=float)
        report.plot_error_growth(per_step, directory / "error_growth.png",
                                 thresholds={"correlation": correlation_threshold}, title=title)
        if any(mean_spectra.values()):
            report.plot_spectra({v: sp for v, sp in mean_spectra.items() if sp}, directory / "spectra.png",
                                title=title)
    report.plot_snapshots({v: np.stack(a) for v, a in snaps["truth"].items()},
                          {v: np.stack(a) for v, a in snaps["pred"].items()}, shown, directory / "snapshots.png",
                          title=f"{title}, trajectory {trajectory}")


PLOTS = ("error_growth", "snapshots", "spectra")


def log_outputs(logger, directory: Path, summary: dict[str, Any]) -> list[str]:
    """Send the rollout's plots (images), its per-variable table and its per-step mean metrics (scalars, step =
    rollout step) to a ``sciformer.loggers`` logger; returns the tags sent."""
    sent = []
    for name in PLOTS:
        if (directory / f"{name}.png").is_file():
            logger.image(f"rollout/{name}", directory / f"{name}.png")
            sent.append(f"rollout/{name}")
    per_step = summary.get("per_step") or {}
    if per_step:
        base = (summary.get("baseline_persistence") or {}).get("per_step", {})
        rows = []
        for metric, by_var in per_step.items():
            for var, values in by_var.items():
                last = values[-1] if values else None
                b = base.get(metric, {}).get(var, [None])[-1] if base else None
                rows.append([metric, var, values[0] if values else None, last, b])
        logger.table("rollout/metrics", ["metric", "variable", "first step", "last step", "persistence, last step"],
                     rows)
        sent.append("rollout/metrics")
        for metric, by_var in per_step.items():
            for step, value in enumerate(by_var.get("mean", []), start=1):
                if value is not None:
                    logger.scalar(f"rollout/{metric}_mean", value, step)
            sent.append(f"rollout/{metric}_mean")
    return sent
