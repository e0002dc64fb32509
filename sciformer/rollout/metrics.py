"""Per-step rollout metrics in physical units (definitions of DECISIONS, computed by ``sciformer.metrics``):
VRMSE, nRMSE and correlation per (trajectory, step, variable), energy spectra, conservation drift, and the
summary over trajectories (correlation time, valid-rollout length, The Well's windows, APEBench's aggregate).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sciformer.metrics import fields, spectra

WELL_WINDOWS = ((1, 5), (6, 12), (13, 30))  # The Well reports rollout VRMSE averaged over step windows
APEBENCH_STEPS = 100


def step_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """VRMSE, nRMSE (PDEBench, per channel) and Pearson correlation (``sciformer.metrics.fields``) per
    (trajectory, step, variable) of [B, n, C, *S] arrays, in float64 over the spatial axes; NaN where the
    prediction is NaN (after a blow-up)."""
    p = torch.from_numpy(np.asarray(pred, dtype=np.float64))
    y = torch.from_numpy(np.asarray(truth, dtype=np.float64))
    d = p.ndim - 3
    return {"vrmse": fields.vrmse(p, y, d).numpy(), "nrmse": fields.nrmse(p, y, d).numpy(),
            "correlation": fields.pearson(p, y, d).numpy()}


def energy_spectrum(f: np.ndarray, spatial_dims: int) -> tuple[np.ndarray, np.ndarray]:
    """``sciformer.metrics.spectra.energy_spectrum`` on a numpy array (float64): ``k`` [K] and ``E`` [..., K],
    ``E(k) = ½ Σ_{|κ| ∈ [k−½, k+½)} |f̂(κ)|²`` with K = min(S)//2 + 1."""
    k, e = spectra.energy_spectrum(torch.from_numpy(np.asarray(f, dtype=np.float64)), spatial_dims)
    return k.numpy(), e.numpy()


def spectrum_sums(truth: np.ndarray, pred: np.ndarray):
    """Spectra of truth and prediction [B, *S] summed over the finite trajectories: (k, E_true, E_pred, count)."""
    ok = np.isfinite(pred.reshape(len(pred), -1)).all(-1)
    k, et = energy_spectrum(truth[ok], truth.ndim - 1)
    _, ep = energy_spectrum(pred[ok], pred.ndim - 1)
    return k, et.sum(0), ep.sum(0), int(ok.sum())


def mean_spectrum(parts):
    k = parts[0][0]
    n = max(1, sum(p[3] for p in parts))
    return k, sum(p[1] for p in parts) / n, sum(p[2] for p in parts) / n


def finite_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _first_below(values: np.ndarray, threshold: float) -> int | None:
    """1-based index of the first value below ``threshold`` (NaN counts as below), None if none."""
    bad = ~(values >= threshold)
    return int(np.argmax(bad)) + 1 if bad.any() else None


def summarize(metrics: dict[str, np.ndarray], variables: Sequence[str], blowup_step: np.ndarray,
              time: np.ndarray, threshold: float = 0.8) -> dict[str, Any]:
    """Summary over trajectories of per-(trajectory, step, variable) metrics [B, n, C] (steps with truth).

    Per-step values are means over the trajectories still running (``n_active``: a blown-up trajectory leaves
    the mean at its blow-up step; its count is reported). Correlation time: the first step at which the mean
    correlation (over variables and running trajectories) falls below ``threshold``. Valid-rollout length per
    trajectory: the steps before its own mean correlation first falls below ``threshold`` or it blows up.
    """
    variables = list(variables)
    b, n, _ = metrics["vrmse"].shape
    active = np.isfinite(metrics["vrmse"]).all(-1)  # [B, n]
    out: dict[str, Any] = {"n_active": active.sum(0).tolist()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices once every trajectory blew up
        per_step = {m: {v: np.nanmean(metrics[m][:, :, c], 0) for c, v in enumerate(variables)} for m in metrics}
        for m in metrics:
            per_step[m]["mean"] = np.nanmean(metrics[m], (0, 2))
        out["per_step"] = {m: {v: [None if not np.isfinite(x) else float(x) for x in a] for v, a in d.items()}
                           for m, d in per_step.items()}
        corr = per_step["correlation"]["mean"]
        ct = _first_below(corr, threshold)
        out["correlation_time"] = {
            "threshold": threshold, "step": ct, "time": None if ct is None else float(time[ct - 1]),
            "definition": f"first step at which the Pearson correlation, averaged over variables and running "
                          f"trajectories, falls below {threshold}; null: not within the {n} scored steps"}
        per_traj = np.nanmean(metrics["correlation"], -1)  # [B, n]
        valid = []
        for i in range(b):
            first = _first_below(per_traj[i], threshold)
            stop = int(blowup_step[i]) if blowup_step[i] else None
            ends = [x for x in (first, stop) if x is not None]
            valid.append(min(ends) - 1 if ends else n)
        out["valid_rollout_length"] = {
            "steps_per_trajectory": valid, "mean": float(np.mean(valid)), "median": float(np.median(valid)),
            "min": int(np.min(valid)), "scored_steps": n,
            "definition": f"steps before a trajectory's correlation (mean over variables) first falls below "
                          f"{threshold} or it blows up; equals scored_steps when neither happens"}
        windows = {}
        for lo, hi in WELL_WINDOWS:
            if lo > n:
                continue
            sel = slice(lo - 1, min(hi, n))
            windows[f"{lo}:{hi}"] = {"steps_used": f"{lo}:{min(hi, n)}",
                                     **{v: float(np.nanmean(per_step["vrmse"][v][sel])) for v in variables},
                                     "mean": float(np.nanmean(per_step["vrmse"]["mean"][sel]))}
        out["well_vrmse_windows"] = {"definition": "VRMSE averaged over the rollout steps of each window "
                                                   "(inclusive, 1-based), as The Well reports", **windows}
        m = min(n, APEBENCH_STEPS)
        ape = np.nanmean(np.sum(metrics["nrmse"][:, :m], -1), 0)  # APEBench: channel-summed nRMSE
        out["apebench_gmean_nrmse"] = {
            "value": float(np.exp(np.mean(np.log(ape)))) if np.isfinite(ape).all() and (ape > 0).all() else None,
            "steps": m, "definition": "geometric mean over steps 1..min(100, n) of the trajectory-mean nRMSE summed "
                                      "over channels (APEBench's aggregate_gmean of mean_nRMSE)"}
    return out


def trajectory_drift(initial: np.ndarray, frames: np.ndarray, spatial_dims: int) -> np.ndarray:
    """Conservation drift [B, n, C] of ``frames`` [B, n, C, *S] relative to ``initial`` [B, C, *S]."""
    from sciformer.metrics.physics import conservation_drift

    traj = torch.from_numpy(np.concatenate([initial[:, None], frames], 1).astype(np.float64))
    return conservation_drift(traj, spatial_dims).numpy()[:, 1:]


def drift_summary(drifts: dict[str, list[np.ndarray]], variables: Sequence[str]) -> dict[str, Any]:
    """Mean over trajectories (running ones) of the drift per step and variable, for the model and the data."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN steps once every trajectory blew up
        per = {who: np.nanmean(np.concatenate(parts), 0) for who, parts in drifts.items()}  # [n, C]
    clean = {who: {v: [None if not np.isfinite(x) else float(x) for x in a[:, c]] for c, v in enumerate(variables)}
             for who, a in per.items()}
    return {"definition": "(∫f(t) − ∫f(t₀)) / ∫|f(t₀)| per variable (sciformer.metrics.physics.conservation_drift), "
                          "mean over trajectories; 'truth' is the data's own drift: the model should follow it, and "
                          "zero is expected only for conserved quantities",
            "per_step": clean, "final": {v: {who: clean[who][v][-1] for who in clean} for v in variables}}
