"""Rollout: autoregressive, direct and mixed rollouts of operator models over a store's trajectories, and
forecasts of series models beyond their horizon; one job per module, data flowing one way:

``plan`` (steps, anchors, lead times) → ``layout`` (channels by variable name) → ``guard`` (blow-up stop) →
``engine`` (the loop, :class:`RolloutEngine`, :func:`pushforward`) → ``metrics`` → ``output`` (zarr, plots);
``fields`` and ``series`` are the two rollout commands, ``command`` (``sciformer rollout``) picks one by the
store's layout. Checkpoints are read by :func:`sciformer.checkpoints.load_model`.
"""

from sciformer.rollout.command import rollout
from sciformer.rollout.engine import (
    BatchRollout,
    RolloutEngine,
    TrajectoryRollout,
    assemble,
    feedback_pairs,
    pushforward,
    resolve_device,
    roll,
)
from sciformer.rollout.guard import BlowupGuard
from sciformer.rollout.layout import Layout
from sciformer.rollout.metrics import APEBENCH_STEPS, WELL_WINDOWS, energy_spectrum, step_metrics, summarize
from sciformer.rollout.plan import MODES, Plan, lead_times, snapshot_time
from sciformer.rollout.series import roll_forward, rollout_series

__all__ = [
    "APEBENCH_STEPS", "MODES", "WELL_WINDOWS", "BatchRollout", "BlowupGuard", "Layout", "Plan",
    "RolloutEngine", "TrajectoryRollout", "assemble", "energy_spectrum", "feedback_pairs", "lead_times",
    "pushforward", "resolve_device", "roll", "roll_forward", "rollout", "rollout_series", "snapshot_time",
    "step_metrics", "summarize",
]
