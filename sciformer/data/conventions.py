"""Conventions every part of sciformer shares (DECISIONS): variable roles and the lead-time rule.

Defined once here so that the store, the samplers, the rollout engine and the checkpoints cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

TIME_ROLES = ("state", "solution")
# Static fields are inputs only by default: not predicted, not scored, re-inserted from data during rollout.
STATIC_ROLES = ("coefficient", "forcing", "source")
ROLES = TIME_ROLES + STATIC_ROLES


def is_static(role: str | None, steady: bool = False) -> bool:
    """Static variables have no time axis; in a steady store every variable is static."""
    return steady or role in STATIC_ROLES


def time_span(time: Sequence[float]) -> float:
    """The unit of lead time: the store's full span ``time[-1] − time[0]`` (1 for one snapshot or a zero span)."""
    span = float(time[-1] - time[0]) if len(time) > 1 else 1.0
    return span if span > 0 else 1.0


def source_span(source) -> float:
    """The span of a store or lazy source. With per-trajectory time grids (``trajectory_time`` [N, T]) it is the
    span of all its snapshot times, ``max(last) − min(first)``, one unit for the whole store, so equal physical
    gaps get equal lead times in every trajectory; with one shared grid it is :func:`time_span`. A source may
    carry the span of the store it belongs to (``lead_time_span``): a Well directory's valid and test splits
    measure lead times in the train split's span, so a lead time means the same in every stage."""
    fixed = getattr(source, "lead_time_span", None)
    if fixed is not None:
        return float(fixed)
    tt = getattr(source, "trajectory_time", None)
    if tt is None:
        return time_span(source.time)
    span = float(tt[:, -1].max() - tt[:, 0].min())
    return span if span > 0 else 1.0


def snapshot_times(source, i: int):
    """Snapshot times of trajectory ``i``: its own row of ``trajectory_time`` if the source has one, else ``time``."""
    tt = getattr(source, "trajectory_time", None)
    return source.time if tt is None else tt[i]


def lead_time(t_from: float, t_to: float, span: float) -> float:
    """Lead time of a pair in units of the store's span: ``(t_to − t_from) / span``. For Poseidon's 21-snapshot
    data this is its ``(t2 − t1)/20``, so converted checkpoints see the inputs they were trained on."""
    return float((t_to - t_from) / span)
