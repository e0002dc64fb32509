"""Tables (markdown) and plots (matplotlib PNG) from metric results.

Plots are drawn on a bare :class:`matplotlib.figure.Figure` (no pyplot state, no GUI backend) and written
atomically. Inputs are plain arrays and dicts, so any evaluation (rollouts, fine-tuning sweeps) can use them:

- :func:`plot_error_growth`: per-step metrics per variable (one panel per metric).
- :func:`plot_snapshots`: truth / prediction / error at chosen steps (2-D fields; 1-D as lines; 3-D mid-slices).
- :func:`plot_spectra`: isotropic energy spectra of truth and prediction at chosen steps (log–log).
- :func:`markdown_table`: rows of dicts as a GitHub markdown table.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sciformer.io import atomic_path

LOG_METRICS = ("vrmse", "nrmse", "rmse", "mse", "rel_l1", "rel_l2", "spectrum_error")


def figure(nrows: int, ncols: int, width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    return fig, axes


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def plot_error_growth(per_step: Mapping[str, Mapping[str, Sequence[float]]], path: str | os.PathLike,
                      steps: Sequence[float] | None = None, xlabel: str = "rollout step",
                      thresholds: Mapping[str, float] | None = None, title: str = "",
                      truth_steps: int | None = None) -> Path:
    """One panel per metric (``per_step[metric][variable]`` = values per step), one line per variable.

    Error metrics (VRMSE, nRMSE, ...) use a log axis; ``thresholds[metric]`` draws a dashed line (e.g. the
    correlation threshold); ``truth_steps`` shades the steps beyond the ground truth.
    """
    metrics = list(per_step)
    if not metrics:
        raise ValueError("no metrics to plot")
    fig, axes = figure(1, len(metrics), 4.2, 3.2)
    for ax, metric in zip(axes[0], metrics):
        for var, values in per_step[metric].items():
            y = np.asarray(values, dtype=float)
            x = np.arange(1, len(y) + 1) if steps is None else np.asarray(steps, dtype=float)[: len(y)]
            ax.plot(x, y, marker="o" if len(y) <= 30 else None, ms=3, label=var)
        if metric.lower() in LOG_METRICS:
            finite = [v for vals in per_step[metric].values() for v in np.asarray(vals, float).ravel()
                      if np.isfinite(v) and v > 0]
            if finite:
                ax.set_yscale("log")
        if thresholds and metric in thresholds:
            ax.axhline(thresholds[metric], color="k", ls="--", lw=0.8, label=f"threshold {thresholds[metric]:g}")
        if truth_steps is not None and steps is None:
            n = max(len(np.asarray(v)) for v in per_step[metric].values())
            if truth_steps < n:
                ax.axvspan(truth_steps + 0.5, n + 0.5, color="0.9", label="no ground truth")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def _as_2d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    while a.ndim > 2:  # 3-D: the mid-plane of the last axis
        a = a[..., a.shape[-1] // 2]
    return a


def plot_snapshots(truth: Mapping[str, np.ndarray], pred: Mapping[str, np.ndarray], steps: Sequence[int],
                   path: str | os.PathLike, title: str = "") -> Path:
    """Rows: for each variable truth / prediction / error (prediction − truth); columns: the chosen steps.

    ``truth[var]`` and ``pred[var]`` are [len(steps), *S]; a truth entry that is all NaN (no ground truth at that
    step) leaves its truth and error panels empty. Truth and prediction share a colour scale per variable; the
    error uses a symmetric diverging scale.
    """
    variables = list(pred)
    steps = list(steps)
    if not variables or not steps:
        raise ValueError("nothing to plot: no variables or no steps")
    one_d = np.asarray(pred[variables[0]]).ndim == 2
    fig, axes = figure(3 * len(variables), len(steps), 2.4, 2.0 if not one_d else 1.6)
    for r, var in enumerate(variables):
        p = np.asarray(pred[var], dtype=float)
        t = np.asarray(truth.get(var, np.full_like(p, np.nan)), dtype=float)
        both = np.concatenate([p[np.isfinite(p)], t[np.isfinite(t)]])
        vmin, vmax = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
        err = p - t
        emax = float(np.nanmax(np.abs(err))) if np.isfinite(err).any() else 1.0
        emax = emax if emax > 0 else 1.0
        for c, step in enumerate(steps):
            panels = (("truth", t[c], "viridis", vmin, vmax), ("prediction", p[c], "viridis", vmin, vmax),
                      ("error", err[c], "RdBu_r", -emax, emax))
            for j, (label, field, cmap, lo, hi) in enumerate(panels):
                ax = axes[3 * r + j, c]
                if one_d:
                    ax.plot(field)
                    ax.set_ylim(lo, hi)
                else:
                    im = ax.imshow(_as_2d(field).T, origin="lower", cmap=cmap, vmin=lo, vmax=hi)
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if c == len(steps) - 1:
                        ax.figure.colorbar(im, ax=ax, shrink=0.8)
                if not np.isfinite(field).any():
                    ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes, fontsize=8)
                if r == 0 and j == 0:
                    ax.set_title(f"step {step}", fontsize=8)
                if c == 0:
                    ax.set_ylabel(f"{var}\n{label}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def plot_spectra(spectra: Mapping[str, Mapping[int, tuple[np.ndarray, np.ndarray, np.ndarray]]],
                 path: str | os.PathLike, title: str = "") -> Path:
    """One panel per variable: ``spectra[var][step] = (k, E_truth, E_pred)``; truth solid, prediction dashed,
    one colour per step, log–log (non-positive values are not drawn)."""
    variables = list(spectra)
    if not variables:
        raise ValueError("no spectra to plot")
    fig, axes = figure(1, len(variables), 4.2, 3.4)
    for ax, var in zip(axes[0], variables):
        for n, (step, (k, e_true, e_pred)) in enumerate(sorted(spectra[var].items())):
            color = f"C{n % 10}"
            k = np.asarray(k, float)
            for e, ls, label in ((e_true, "-", "truth"), (e_pred, "--", "prediction")):
                e = np.asarray(e, float)
                ok = (k > 0) & np.isfinite(e) & (e > 0)
                if ok.any():
                    ax.loglog(k[ok], e[ok], ls, color=color, label=f"step {step} {label}")
        ax.set_xlabel("wavenumber |k|")
        ax.set_ylabel(f"E(k) of {var}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def _fmt(value: Any, floatfmt: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "—" if math.isnan(value) else format(float(value), floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                   floatfmt: str = ".4g") -> str:
    """Rows of dicts as a markdown table; columns default to the keys in first-seen order; NaN/None → —."""
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c), floatfmt) for c in columns) + " |")
    return "\n".join(lines)
