"""The rollout plan: which input and lead time each step uses (``ar``, ``direct`` and ``mixed`` are one rule).

Modes (``k`` = jump, ``s = 1..N`` the rollout step, each step ``stride`` snapshots of the store):

- ``ar``: the model's prediction of step ``s-1`` is its input for step ``s`` (fixed lead time: one step).
- ``direct``: every step is one jump from the initial condition, lead time ``time[s] − time[0]`` (for
  time-conditioned models such as scOT trained on all2all pairs).
- ``mixed``: jumps from an *anchor* that advances every ``k`` steps: step ``s`` is predicted from the
  prediction at ``a = k·⌊(s−1)/k⌋`` with lead time ``time[s] − time[a]``. ``k = 1`` is ``ar``, ``k ≥ N`` is
  ``direct``.

Lead times follow ``sciformer.data.conventions`` (the samplers' rule):
``(time[j] − time[i]) / (time[-1] − time[0])``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sciformer.data.conventions import lead_time, time_span
from sciformer.errors import SciformerError

MODES = ("ar", "direct", "mixed")


@dataclass(frozen=True)
class Plan:
    """Steps ``1..steps``; step ``s`` targets snapshot ``start + s·stride`` and is predicted from the state at
    its anchor step ``anchor(s)`` (0 = the initial condition, taken from the data)."""

    steps: int
    mode: str = "ar"
    jump: int = 1
    stride: int = 1
    history: int = 1
    start: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise SciformerError(f"mode must be one of {MODES}, not {self.mode!r}")
        for name in ("steps", "jump", "stride", "history"):
            if getattr(self, name) < 1:
                raise SciformerError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.start < 0:
            raise SciformerError(f"start must be ≥ 0, got {self.start}")

    @property
    def k(self) -> int:
        """Steps per jump: 1 (ar), all of them (direct), ``jump`` (mixed)."""
        return {"ar": 1, "direct": self.steps, "mixed": self.jump}[self.mode]

    def anchor(self, s: int) -> int:
        return self.k * ((s - 1) // self.k)

    def snapshot(self, s: int) -> int:
        """Store snapshot index of step ``s`` (may exceed the store's last snapshot)."""
        return self.start + s * self.stride


def snapshot_time(time: np.ndarray, index: int) -> float:
    """``time[index]``, extrapolated beyond the last snapshot with the last spacing (uniform continuation)."""
    n = len(time)
    if index < n:
        return float(time[index])
    dt = float(time[-1] - time[-2]) if n > 1 else 1.0
    return float(time[-1] + (index - n + 1) * dt)


def lead_times(plan: Plan, time: np.ndarray) -> np.ndarray:
    """Lead time of every step [steps], in units of the store's span (DECISIONS)."""
    span = time_span(time)
    return np.array([lead_time(snapshot_time(time, plan.snapshot(plan.anchor(s))),
                               snapshot_time(time, plan.snapshot(s)), span)
                     for s in range(1, plan.steps + 1)], dtype=np.float64)
