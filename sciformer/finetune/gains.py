"""Poseidon's gains of a fine-tuned model over a baseline in a sample-count sweep (DECISIONS: metrics)."""

from __future__ import annotations

import math


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
