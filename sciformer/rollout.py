"""Rollout engine: autoregressive, direct and mixed rollouts of operator models over a store's trajectories.

Modes (``k`` = jump, ``s = 1..N`` the rollout step, each step ``stride`` snapshots of the store):

- ``ar``: the model's prediction of step ``s-1`` is its input for step ``s`` (fixed lead time: one step).
- ``direct``: every step is one jump from the initial condition, lead time ``time[s] − time[0]`` (for
  time-conditioned models such as scOT trained on all2all pairs).
- ``mixed``: jumps from an *anchor* that advances every ``k`` steps: step ``s`` is predicted from the
  prediction at ``a = k·⌊(s−1)/k⌋`` with lead time ``time[s] − time[a]``. ``k = 1`` is ``ar``, ``k ≥ N`` is
  ``direct``, so the three modes are one rule.

Lead times are in units of the store's time span, ``(time[j] − time[i]) / (time[-1] − time[0])`` (DECISIONS).

Channels are laid out by variable name from the checkpoint's data spec: ``inputs`` = state variables then
static variables (``history`` frames of the states, oldest first, when the model takes several past frames),
``outputs`` = state variables (plus static ones for Poseidon's ``predict_static`` convention, which are
ignored here). Static fields (roles coefficient / forcing / source) are re-inserted from the data at every
step, never taken from a prediction; variables the checkpoint knows but the store lacks (mixture padding) are
held at zero (the normalised mean) as during training, only with ``pad_missing=True``.

Blow-up guard: a trajectory stops at the first step whose prediction holds a non-finite value or a value
outside its data range ``[lo, hi]`` (per variable, over the trajectory's available ground truth) widened
``blowup_factor``-fold about its centre; the step is recorded and the other trajectories continue.

``sciformer rollout`` (:func:`rollout`) runs all of this on a store's split and writes a zarr dataset,
``summary.json`` and PNG plots. :func:`pushforward` is the training-time helper (unrolled / pushforward steps).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time as _time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sciformer.errors import CheckpointError, DataError, SciformerError
from sciformer.metrics import fields, spectra

log = logging.getLogger(__name__)

MODES = ("ar", "direct", "mixed")
STATIC_ROLES = ("coefficient", "forcing", "source")
MIN_STD = 1e-8  # as sciformer.data.normalization: a constant variable keeps std 1


# ---- the plan: which input and lead time each step uses ------------------------------------------
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
    span = float(time[-1] - time[0]) if len(time) > 1 else 1.0
    span = span if span > 0 else 1.0
    return np.array([(snapshot_time(time, plan.snapshot(s)) - snapshot_time(time, plan.snapshot(plan.anchor(s))))
                     / span for s in range(1, plan.steps + 1)], dtype=np.float64)


# ---- channel layout ---------------------------------------------------------------------------
@dataclass
class Layout:
    """Where each variable sits in the model's input and output, from a data spec and a store.

    ``states``: state variables fed back (order of the spec's inputs); ``static``: static input variables
    (from the data); ``padded``: input variables the store lacks (held at 0); ``out_index[c]``: the output
    channel of ``states[c]`` (None: the model does not predict it); ``history``: frames per input.
    """

    inputs: list[str]
    outputs: list[str]
    states: list[str]
    static: list[str]
    padded: list[str]
    out_index: list[int | None]
    stats: dict[str, dict[str, float]]
    history: int = 1

    @classmethod
    def from_spec(cls, spec: dict[str, Any], source, pad_missing: bool = False, history: int | None = None,
                  where: str = "checkpoint") -> Layout:
        inputs, outputs = list(spec.get("inputs") or []), list(spec.get("outputs") or [])
        if not inputs or not outputs:
            raise CheckpointError(f"{where}: no data spec (inputs/outputs) in the checkpoint; it cannot be rolled out "
                                  "on a store without knowing its variables; train or fine-tune it with sciformer")
        roles = dict(spec.get("roles") or {})
        for v in inputs:
            if v not in roles:
                roles[v] = source.roles.get(v, "state") if hasattr(source, "roles") else "state"
        store_vars = list(source.variables)
        unknown = [v for v in store_vars if v not in inputs and v not in outputs]
        missing = [v for v in inputs if v not in store_vars]
        if unknown or (missing and not pad_missing):
            parts = []
            if unknown:
                parts.append(f"the store has {unknown}, which the model was not trained on")
            if missing:
                parts.append(f"the model needs {missing}, which the store lacks")
            raise CheckpointError(
                f"{where} was trained on inputs {inputs} / outputs {outputs}; store {source.path} has variables "
                f"{store_vars}: " + "; ".join(parts) + ". Adapt the channels to this store first with "
                "`sciformer finetune` (channel adaptation by variable name), or pass --pad_missing to hold "
                "variables the store lacks at their mean as a mixture-trained model saw them")
        for v in inputs:
            if v in store_vars and not _same_kind(roles.get(v), source.roles[v], source.steady):
                raise CheckpointError(f"{where}: variable {v!r} is {roles.get(v)!r} in the checkpoint but "
                                      f"{source.roles[v]!r} in {source.path}; adapt with `sciformer finetune`")
        static = [v for v in inputs if roles[v] in STATIC_ROLES]
        states = [v for v in inputs if v not in static]
        out_index = [outputs.index(v) if v in outputs else None for v in states]
        stats = {}
        known = spec.get("stats") or {}
        for v in inputs + outputs:
            s = known.get(v) or (source.stats.get(v) if hasattr(source, "stats") else None)
            if s is None:
                raise CheckpointError(f"{where}: no normalisation statistics for {v!r} in the checkpoint or store")
            stats[v] = {"mean": float(s["mean"]), "std": float(s["std"])}
        h = int(history if history is not None else spec.get("history", 1) or 1)
        return cls(inputs, outputs, states, static, [v for v in inputs if v not in store_vars], out_index, stats, h)

    @property
    def in_channels(self) -> int:
        return self.history * len(self.states) + len(self.static)

    @property
    def input_perm(self) -> list[int] | None:
        """Channel order of the model's input as indices into ``[states…, static…]`` when the spec lists its
        inputs in another order (one frame only); None when it is already that order."""
        if self.history != 1:
            return None
        perm = [(self.states + self.static).index(v) for v in self.inputs]
        return None if perm == list(range(len(perm))) else perm

    @property
    def predicted(self) -> list[str]:
        """State variables that are predicted and present in the store (written and scored)."""
        return [v for v, o in zip(self.states, self.out_index) if o is not None and v not in self.padded]

    def mean_std(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        m = np.array([self.stats[n]["mean"] for n in names], np.float64)
        s = np.array([self.stats[n]["std"] if self.stats[n]["std"] > MIN_STD else 1.0 for n in names], np.float64)
        return m, s


def _same_kind(a: str | None, b: str, steady: bool) -> bool:
    """Static vs time-dependent agree (state and solution are both time-dependent)."""
    return a is None or (a in STATIC_ROLES) == (b in STATIC_ROLES)


# ---- the blow-up guard --------------------------------------------------------------------------
@dataclass
class BlowupGuard:
    """Per trajectory and channel: stop when a value is non-finite or ``|x − mid| > factor · half``.

    ``mid``/``half`` [B, C] are the centre and half-width of each trajectory's data range (in the units the
    checked tensor uses); ``factor = inf`` only checks finiteness.
    """

    mid: torch.Tensor
    half: torch.Tensor
    factor: float = 10.0

    @classmethod
    def from_range(cls, lo: torch.Tensor, hi: torch.Tensor, factor: float) -> BlowupGuard:
        mid, half = (hi + lo) / 2, (hi - lo) / 2
        floor = 1e-6 * torch.maximum(lo.abs(), hi.abs()).clamp_min(1.0)
        return cls(mid, torch.maximum(half, floor), float(factor))

    def __call__(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [b, C, *S] (rows ``rows`` of the guard's batch): bool [b], True where the trajectory blew up."""
        mid, half = (self.mid, self.half) if rows is None else (self.mid[rows], self.half[rows])
        flat = x.float().flatten(2)
        bad = ~torch.isfinite(flat).all(-1).all(-1)
        if math.isfinite(self.factor):
            dev = (flat - mid.unsqueeze(-1)).abs().nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).amax(-1)
            bad |= (dev > self.factor * half).any(-1)
        return bad


# ---- the core loop (normalised tensors) -----------------------------------------------------------
@dataclass
class BatchRollout:
    """Result of :func:`roll`: ``pred`` [B, steps, C, *S] normalised states (NaN after a blow-up),
    ``blowup_step`` [B] (1-based step of the first bad prediction, 0 = none)."""

    pred: torch.Tensor
    blowup_step: torch.Tensor


def assemble(frames: torch.Tensor, static: torch.Tensor | None) -> torch.Tensor:
    """Model input: ``frames`` [B, H, C_s, *S] (oldest first) flattened to channels, then ``static``."""
    x = frames.flatten(1, 2)
    return x if static is None or static.shape[1] == 0 else torch.cat([x, static.to(x.dtype)], dim=1)


def roll(model: Callable, history: torch.Tensor, static: torch.Tensor | None, plan: Plan,
         lead: Sequence[float] | np.ndarray, out_index: Sequence[int | None], guard: BlowupGuard | None = None,
         padded: Sequence[int] = (), autocast_dtype: torch.dtype | None = None,
         on_step: Callable[[int], None] | None = None, input_perm: Sequence[int] | None = None) -> BatchRollout:
    """Roll ``model`` out for ``plan.steps`` steps from ``history`` [B, H, C_s, *S] (normalised; the last frame
    is the initial condition at step 0, earlier frames the H−1 snapshots before it, ``plan.stride`` apart).

    ``static`` [B, C_static, *S] is re-inserted at every step; ``out_index[c]`` maps state channel ``c`` to
    the model's output channel (None: keep the input's value, allowed only for channels in ``padded``, which
    are reset to 0 each step). ``lead[s-1]`` is step s's lead time (None entries / empty: steady, t=None).
    Stopped trajectories are dropped from the batch; their remaining steps are NaN. ``input_perm`` reorders
    the assembled ``[frames…, static…]`` channels into the model's input order.
    """
    b, h, c = history.shape[:3]
    spatial = history.shape[3:]
    if h != plan.history:
        raise SciformerError(f"history has {h} frames, the plan expects {plan.history}")
    if len(lead) != plan.steps:
        raise SciformerError(f"{len(lead)} lead times for {plan.steps} steps")
    need = [i for i, o in enumerate(out_index) if o is None and i not in padded]
    if need and plan.k < plan.steps:  # some step would take its input from a prediction
        raise CheckpointError(f"state channels {need} are inputs the model does not predict; it cannot be rolled out "
                              "autoregressively (use --mode direct)")
    device = history.device
    out_ch = list(out_index)
    pred = torch.full((b, plan.steps, c, *spatial), float("nan"), dtype=torch.float32, device=device)
    blowup = torch.zeros(b, dtype=torch.long, device=device)
    active = torch.arange(b, device=device)
    # frames[s] for s ≤ 0 come from `history`; s ≥ 1 from `pred`
    hist = history.float()

    def frame(s: int, rows: torch.Tensor) -> torch.Tensor:
        return hist[rows, h - 1 + s] if s <= 0 else pred[rows, s - 1]

    keep = [i for i, o in enumerate(out_ch) if o is not None]
    keep_out = [out_ch[i] for i in keep]
    pad_idx = [int(i) for i in padded]
    perm = None if input_perm is None else torch.as_tensor(list(input_perm), dtype=torch.long, device=device)
    ctx = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    for s in range(1, plan.steps + 1):
        if active.numel() == 0:
            if on_step is not None:
                on_step(s)
            continue
        a = plan.anchor(s)
        frames = torch.stack([frame(a - (h - 1 - j), active) for j in range(h)], dim=1)
        if pad_idx:
            frames[:, :, pad_idx] = 0.0
        x = assemble(frames, None if static is None else static[active])
        if perm is not None:
            x = x.index_select(1, perm)
        t = None if lead[s - 1] is None else torch.full((len(active),), float(lead[s - 1]), device=device)
        with ctx:
            y = model(x, t)
        y = y.float()
        new = frames[:, -1].clone()
        new[:, keep] = y[:, keep_out]
        if pad_idx:
            new[:, pad_idx] = 0.0
        bad = guard(new, active) if guard is not None else torch.zeros(len(active), dtype=torch.bool, device=device)
        ok = active[~bad]
        pred[ok, s - 1] = new[~bad]
        if bad.any():
            blowup[active[bad]] = s
            active = ok
        if on_step is not None:
            on_step(s)
    return BatchRollout(pred, blowup)


# ---- rolling out a store's trajectories ----------------------------------------------------------
@dataclass
class TrajectoryRollout:
    """One batch of trajectories in physical units: ``pred`` [B, steps, C, *S] of ``variables`` (NaN after a
    blow-up), ``truth`` [B, n_truth, C, *S] for steps 1..n_truth (n_truth ≤ steps), ``blowup_step`` [B]
    (0 = none), ``lead`` [steps] lead times, ``initial`` [B, C, *S] the initial condition."""

    trajectories: list[int]
    variables: list[str]
    pred: np.ndarray
    truth: np.ndarray
    initial: np.ndarray
    blowup_step: np.ndarray
    lead: np.ndarray
    seconds: float = 0.0  # wall time of the rollout loop alone (no reading, no de-normalising)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


class RolloutEngine:
    """Roll a model out over trajectories of a store (or any source with FieldStore's read interface).

    Args:
        model: an operator model ``model(x [B, C_in, *S], t [B] | None) -> [B, C_out, *S]`` (normalised).
        spec: the checkpoint's data spec (inputs, outputs, roles, stats[, history]).
        source: the store to read initial conditions, static fields and ground truth from.
        mode, jump, stride, history, start: see :class:`Plan` (history: default the spec's, else 1).
        blowup_factor: the guard's factor on the data range (``inf``: finiteness only).
        device: "auto" (CUDA, then MPS, then CPU) or a torch device string.
        bf16: run the model under bfloat16 autocast (the carried state stays float32).
        compile: ``torch.compile`` the model (dynamic shapes: stopped trajectories shrink the batch).
        pad_missing: hold input variables the store lacks at 0 (normalised mean) instead of refusing.
    """

    def __init__(self, model: nn.Module | Callable, spec: dict[str, Any], source, mode: str = "ar", jump: int = 2,
                 stride: int = 1, history: int | None = None, start: int = 0, blowup_factor: float = 10.0,
                 device: str | torch.device = "auto", bf16: bool = False, compile: bool = False,
                 pad_missing: bool = False, where: str = "the checkpoint"):
        if source.steady or source.time is None:
            raise DataError(f"{source.path}: the store has no time axis (a steady problem); there is nothing to roll "
                            "out. Evaluate one-shot predictions with `sciformer test` instead")
        if len(source.time) < 2:
            raise DataError(f"{source.path}: the store has a single snapshot; a rollout needs at least two")
        if mode not in MODES:
            raise SciformerError(f"mode must be one of {MODES}, not {mode!r}")
        if spec.get("steady"):
            raise CheckpointError(f"{where} was trained on a steady problem (no lead time); it cannot be rolled out")
        self.source, self.spec, self.where = source, spec, where
        self.layout = Layout.from_spec(spec, source, pad_missing, history, where)
        self.mode, self.jump, self.stride, self.start = mode, int(jump), int(stride), int(start)
        self.blowup_factor = float(blowup_factor)
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.bf16 = bool(bf16)
        if isinstance(model, nn.Module):
            model = model.to(self.device).eval()
            in_ch = getattr(getattr(model, "config", None), "in_channels", None)
            out_ch = getattr(getattr(model, "config", None), "out_channels", None)
            if in_ch is not None and in_ch != self.layout.in_channels:
                raise CheckpointError(f"{where}: the model takes {in_ch} input channels, its data spec lays out "
                                      f"{self.layout.in_channels} ({self.layout.history} × {self.layout.states} + "
                                      f"{self.layout.static}); pass the right --history or re-export the model")
            if out_ch is not None and out_ch != len(self.layout.outputs):
                raise CheckpointError(f"{where}: the model predicts {out_ch} channels, its data spec lists "
                                      f"{len(self.layout.outputs)} outputs {self.layout.outputs}")
        self.model = torch.compile(model, dynamic=True) if compile else model
        if mode != "ar" and spec.get("sampler") == "next-step":
            warnings.warn(f"{where} was trained on next-step pairs only; {mode} jumps use lead times it never saw",
                          stacklevel=2)
        if self.first_truth() < 0:
            raise DataError(f"{source.path}: history {self.layout.history} with stride {self.stride} needs the "
                            f"initial condition at snapshot ≥ {(self.layout.history - 1) * self.stride}; pass --start")
        if self.start >= len(source.time):
            raise DataError(f"{source.path}: start snapshot {self.start} outside the store's {len(source.time)} "
                            "snapshots")

    def first_truth(self) -> int:
        return self.start - (self.layout.history - 1) * self.stride

    def available_steps(self) -> int:
        """Steps for which the store has ground truth."""
        return (len(self.source.time) - 1 - self.start) // self.stride

    def plan(self, steps: int | None = None) -> Plan:
        steps = self.available_steps() if steps is None else int(steps)
        if steps < 1:
            raise DataError(f"{self.source.path}: no steps to roll out (start {self.start}, stride {self.stride}, "
                            f"{len(self.source.time)} snapshots); pass --steps")
        return Plan(steps, self.mode, self.jump, self.stride, self.layout.history, self.start)

    # ---- data ---------------------------------------------------------------------------------
    def _read(self, name: str, i: int, t: int | None) -> np.ndarray:
        return np.asarray(self.source.read(name, i, t), dtype=np.float32)

    def load(self, trajectories: Sequence[int], plan: Plan):
        """Normalised history [B, H, C_s, *S] and static [B, C_st, *S]; physical truth [B, n, C_p, *S] of the
        predicted variables at steps 1..n (n = steps with truth) and per-state data ranges [B, C_s] (lo, hi)."""
        lay, src = self.layout, self.source
        n_truth = min(plan.steps, self.available_steps())
        shape = tuple(src.spatial_shape)
        b = len(trajectories)
        hist = np.zeros((b, lay.history, len(lay.states), *shape), np.float32)
        static = np.zeros((b, len(lay.static), *shape), np.float32)
        truth = np.zeros((b, n_truth, len(lay.predicted), *shape), np.float32)
        lo = np.zeros((b, len(lay.states)), np.float64)
        hi = np.zeros((b, len(lay.states)), np.float64)
        m_s, s_s = lay.mean_std(lay.states)
        for k, i in enumerate(trajectories):
            for c, v in enumerate(lay.states):
                if v in lay.padded:
                    continue
                frames = [self._read(v, i, self.first_truth() + j * self.stride) for j in range(lay.history)]
                hist[k, :, c] = (np.stack(frames) - m_s[c]) / s_s[c]
                later = [self._read(v, i, plan.snapshot(s)) for s in range(1, n_truth + 1)]
                vals = frames + later
                lo[k, c] = min(float(f.min()) for f in vals)
                hi[k, c] = max(float(f.max()) for f in vals)
                if v in lay.predicted:
                    p = lay.predicted.index(v)
                    for s, f in enumerate(later):
                        truth[k, s, p] = f
            for c, v in enumerate(lay.static):
                if v in lay.padded:
                    continue
                m, s = lay.mean_std([v])
                static[k, c] = (self._read(v, i, None) - m[0]) / s[0]
        lo_n, hi_n = (lo - m_s) / s_s, (hi - m_s) / s_s
        return hist, static, truth, lo_n, hi_n

    def run(self, trajectories: Sequence[int], steps: int | None = None,
            on_step: Callable[[int], None] | None = None) -> TrajectoryRollout:
        """Roll out ``trajectories`` (one batch) for ``steps`` steps (default: as many as the store has truth)."""
        plan = self.plan(steps)
        lay = self.layout
        hist, static, truth, lo_n, hi_n = self.load(trajectories, plan)
        dev = self.device
        guard = BlowupGuard.from_range(torch.as_tensor(lo_n, dtype=torch.float32, device=dev),
                                       torch.as_tensor(hi_n, dtype=torch.float32, device=dev), self.blowup_factor)
        lead = lead_times(plan, self.source.time)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = _time.perf_counter()
        with torch.inference_mode():
            res = roll(self.model, torch.from_numpy(hist).to(dev), torch.from_numpy(static).to(dev), plan, lead,
                       lay.out_index, guard, [lay.states.index(v) for v in lay.padded if v in lay.states],
                       torch.bfloat16 if self.bf16 else None, on_step, lay.input_perm)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = _time.perf_counter() - t0
        keep = [lay.states.index(v) for v in lay.predicted]
        m, s = lay.mean_std(lay.predicted)
        shape = (1, 1, len(keep)) + (1,) * (hist.ndim - 3)
        pred = res.pred[:, :, keep].cpu().numpy().astype(np.float64) * s.reshape(shape) + m.reshape(shape)
        init = hist[:, -1, keep].astype(np.float64) * s.reshape(shape[1:]) + m.reshape(shape[1:])
        return TrajectoryRollout(list(map(int, trajectories)), list(lay.predicted), pred.astype(np.float32), truth,
                                 init.astype(np.float32), res.blowup_step.cpu().numpy(), lead, seconds)


# ---- training helper: pushforward / unrolled steps (issue 6, item 4) -------------------------------
def feedback_pairs(inputs: Sequence[str], outputs: Sequence[str], roles: dict[str, str] | None = None
                   ) -> list[tuple[int, int]]:
    """``(input channel, output channel)`` of every time-dependent input variable the model predicts, by name.

    Static inputs (roles coefficient / forcing / source) are never fed back: they keep the data's values.
    Raises if a time-dependent input is not among the outputs (such a model cannot be chained).
    """
    roles = roles or {}
    pairs, missing = [], []
    for i, name in enumerate(inputs):
        if roles.get(name) in STATIC_ROLES:
            continue
        if name in outputs:
            pairs.append((i, list(outputs).index(name)))
        else:
            missing.append(name)
    if missing:
        raise CheckpointError(f"inputs {missing} are time-dependent but not predicted (outputs {list(outputs)}); "
                              "the model cannot be applied several times in a row")
    return pairs


def pushforward(model: Callable, x: torch.Tensor, t: torch.Tensor | None, steps: int,
                feedback: Sequence[tuple[int, int]], grad: str = "last", split_lead_time: bool = True,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """Apply ``model`` ``steps`` times in a row from ``x`` [B, C_in, *S]; return the last prediction.

    Each application's prediction replaces the fed-back input channels (``feedback`` from
    :func:`feedback_pairs`); static channels keep ``x``'s values. ``split_lead_time=True`` gives every
    application the lead time ``t / steps``, so the result is compared with the pair's own target (an all2all or
    next-step pair ``(i, j)`` is reached in ``steps`` chained sub-steps); with ``False`` each application uses
    ``t`` and the caller supplies the target ``steps·t`` ahead. ``grad="last"``: the first ``steps − 1``
    applications run without gradient (the pushforward trick of Brandstetter et al. 2022: the model learns to
    correct its own input distribution at the cost of one forward+backward); ``grad="all"``: backpropagation
    through every application (unrolled training, ``steps``× the memory). ``steps=1`` is ``model(x, t)``.
    ``mask`` [B, C_out] (the batch's output mask): channels a sample lacks (mixture padding) are fed back as 0,
    the value the data loader gives them, instead of the model's prediction.
    """
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    if grad not in ("last", "all"):
        raise ValueError(f"grad must be 'last' or 'all', not {grad!r}")
    if steps > 1 and t is None and split_lead_time:
        raise ValueError("a steady problem (t=None) has no lead time to split into sub-steps")
    sub = None if t is None else (t / steps if split_lead_time else t)
    if steps == 1:
        return model(x, t)
    idx_in = torch.tensor([i for i, _ in feedback], device=x.device, dtype=torch.long)
    idx_out = torch.tensor([o for _, o in feedback], device=x.device, dtype=torch.long)
    with torch.set_grad_enabled(torch.is_grad_enabled() and grad == "all"):
        for _ in range(steps - 1):
            y = model(x, sub)
            if mask is not None:
                y = y * mask.to(y.dtype).view(*mask.shape, *([1] * (y.ndim - 2)))
            x = x.index_copy(1, idx_in, y.index_select(1, idx_out).to(x.dtype))
    return model(x, sub)


# ---- loading a checkpoint with its data spec ------------------------------------------------------
def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """A model and its data spec from a Lightning ``.ckpt`` or an export/convert directory (no unpickling)."""
    from sciformer import models
    from sciformer.finetune import load_pretrained

    p = load_pretrained(path)
    cls = models.model_class(p.model_class)
    names = {f.name for f in dataclasses.fields(cls.config_class)}
    model = cls(cls.config_class(**{k: v for k, v in p.config.items() if k in names}))
    missing, unexpected = model.load_state_dict(p.state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match {cls.__name__} (missing {missing[:4]}, unexpected "
                              f"{unexpected[:4]}); a LoRA fine-tune must be exported (merged) with `sciformer export`")
    return model.eval(), dict(p.data_spec or {})


# ---- per-step metrics (physical units; definitions of DECISIONS, computed by sciformer.metrics) ------
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


def _spectra(truth: np.ndarray, pred: np.ndarray):
    """Spectra of truth and prediction [B, *S] summed over the finite trajectories: (k, E_true, E_pred, count)."""
    ok = np.isfinite(pred.reshape(len(pred), -1)).all(-1)
    k, et = energy_spectrum(truth[ok], truth.ndim - 1)
    _, ep = energy_spectrum(pred[ok], pred.ndim - 1)
    return k, et.sum(0), ep.sum(0), int(ok.sum())


def _mean_spectrum(parts):
    k = parts[0][0]
    n = max(1, sum(p[3] for p in parts))
    return k, sum(p[1] for p in parts) / n, sum(p[2] for p in parts) / n


def _finite_or_none(x) -> float | None:
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


# ---- `sciformer rollout` --------------------------------------------------------------------------
def _split(n: int, split: str, splits: Sequence[float]) -> list[int]:
    from sciformer.data.samplers import split_trajectories

    if split == "all":
        return list(range(n))
    names = ("train", "val", "test")
    if split not in names:
        raise SciformerError(f"split must be one of {names} or 'all', not {split!r}")
    return list(split_trajectories(n, tuple(splits))[names.index(split)])


def _drift(initial: np.ndarray, frames: np.ndarray, spatial_dims: int) -> np.ndarray:
    """Conservation drift [B, n, C] of ``frames`` [B, n, C, *S] relative to ``initial`` [B, C, *S]."""
    from sciformer.metrics.physics import conservation_drift

    traj = torch.from_numpy(np.concatenate([initial[:, None], frames], 1).astype(np.float64))
    return conservation_drift(traj, spatial_dims).numpy()[:, 1:]


def _drift_summary(drifts: dict[str, list[np.ndarray]], variables: Sequence[str]) -> dict[str, Any]:
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


def _default_plot_steps(steps: int) -> list[int]:
    return sorted({1, max(1, round(steps / 3)), max(1, round(2 * steps / 3)), steps})


def _batch_dataset(tr: TrajectoryRollout, source, plan: Plan, metrics: dict[str, np.ndarray], time: np.ndarray):
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


def _is_series_store(data) -> bool:
    from sciformer.data.commands import store_layout

    return Path(str(data)).is_dir() and (Path(str(data)) / "zarr.json").exists() and store_layout(data) == "series"


def rollout(*, ckpt: Path, data: Path, split: str = "test", steps: int | None = None, mode: str = "ar",
            jump: int = 2, stride: int = 1, start: int = 0, history: int | None = None,
            trajectories: int | None = None, batch_size: int = 16, device: str = "auto", bf16: bool = False,
            compile: bool = False, blowup_factor: float = 10.0, correlation_threshold: float = 0.8,
            plot_steps: list[int] | None = None, pad_missing: bool = False,
            splits: tuple[float, float, float] = (0.8, 0.1, 0.1),
            out: Path = Path("runs/rollout/rollout.zarr")) -> Path:
    """Roll a trained operator model out over a store's trajectories; write predictions, metrics and plots.

    Writes OUT (an xarray Dataset as zarr, atomically: predicted and true fields per trajectory and step, the
    initial condition, VRMSE/nRMSE/Pearson correlation per trajectory, step and variable, the blow-up step),
    and beside it summary.json and the plots error_growth.png, snapshots.png, spectra.png (use one directory
    per rollout). Metrics are computed on de-normalised (physical) fields, only at steps with ground truth.

    Args:
        ckpt: a Lightning checkpoint (.ckpt) or an export directory (`sciformer export`); its data spec
            (variables, normalisation statistics) must match the store's variables by name.
        data: the store (zarr) or an external file (Poseidon NetCDF, The Well / PDEBench HDF5).
        split: train | val | test | all (trajectory splits as in training, see --splits).
        steps: rollout steps (default: as many as the store has ground truth; more is allowed: the steps
            beyond the truth are predicted but not scored).
        mode: ar (chain one-step predictions), direct (one jump from the initial condition to every step;
            time-conditioned models), mixed (jumps of --jump steps).
        jump: steps per jump in mixed mode.
        stride: store snapshots per rollout step (the fixed lead time of ar mode).
        start: snapshot of the initial condition.
        history: past frames the model takes (default: the checkpoint's data spec, else 1).
        trajectories: roll out only the first N trajectories of the split.
        batch_size: trajectories rolled out together.
        device: auto (CUDA, MPS, else CPU), cpu, cuda, cuda:1, ...
        bf16: bfloat16 autocast for the model (the carried state stays float32).
        compile: torch.compile the model.
        blowup_factor: a trajectory stops when a prediction is non-finite or leaves its data range widened
            this many times about its centre (inf: finiteness only).
        correlation_threshold: correlation time = first step where the mean correlation falls below this.
        plot_steps: steps shown in the snapshot and spectrum plots (default: first, 1/3, 2/3, last).
        pad_missing: hold variables the model knows but the store lacks at their mean (mixture padding).
        splits: train/val/test fractions of the trajectories (as the data module's).
        out: output dataset (*.zarr).

    Example:
        sciformer rollout --ckpt runs/scot/last.ckpt --data data/ns-sines.zarr --split test --mode ar --out runs/rollout/ar/rollout.zarr
        sciformer rollout --ckpt exports/scot-t --data data/ns-sines.zarr --mode direct --steps 40 --out runs/rollout/direct/rollout.zarr
        sciformer rollout --ckpt exports/scot-t --data data/ns-sines.zarr --mode mixed --jump 4 --bf16 true --out runs/rollout/mixed/rollout.zarr
    """
    if _is_series_store(data):  # a forecasting model: roll its horizon forward over the series' windows
        from sciformer.series_rollout import rollout_series

        if steps is None:
            raise DataError(f"{data} is a series store: give --steps (the forecast length to roll out to)")
        summary_file = Path(out).parent / "summary.json"
        res = rollout_series(ckpt, data, length=steps, split=split, batch_size=batch_size, out=summary_file)
        print(f"series rollout: {res['windows']} windows, {steps} steps; summary: {summary_file}")
        return summary_file
    import zarr
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from sciformer import report
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
    model, spec = load_model(ckpt)
    source = open_source(data)
    engine = RolloutEngine(model, spec, source, mode=mode, jump=jump, stride=stride, history=history, start=start,
                           blowup_factor=blowup_factor, device=device, bf16=bf16, compile=compile,
                           pad_missing=pad_missing, where=str(ckpt))
    plan = engine.plan(steps)
    ids = _split(source.n_trajectories, split, splits)
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
    shown = sorted({s for s in (plot_steps or _default_plot_steps(plan.steps)) if 1 <= s <= plan.steps})
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
                    drifts.setdefault(who, []).append(_drift(tr.initial, frames, len(source.axes)))
            blowups.append(tr.blowup_step)
            ds = _batch_dataset(tr, source, plan, metrics, time)
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
                        spec_acc[v].setdefault(s, []).append(_spectra(tr.truth[:, s - 1, c], tr.pred[:, s - 1, c]))
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
                summary["conservation_drift"] = _drift_summary(drifts, variables)
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
    mean_spectra = {v: {s: _mean_spectrum(parts) for s, parts in spec_acc[v].items()} for v in variables}
    if any(mean_spectra.values()):
        summary["energy_spectrum_error"] = {
            "definition": "sum_k |E_pred(k) - E_true(k)| / sum_k E_true(k) of the isotropic spectra averaged over the "
                          "finite trajectories, at the plotted steps (keys: step)",
            **{v: {str(s): _finite_or_none(spectra.spectrum_error(torch.from_numpy(ep), torch.from_numpy(et)))
                   for s, (_, et, ep) in sp.items()} for v, sp in mean_spectra.items() if sp}}
    write_json(summary_path, summary)
    title = f"{Path(str(ckpt)).name} on {Path(str(source.path)).name} ({split}, {mode})"
    if n_truth:
        per_step = {m: {v: np.array(summary["per_step"][m][v], dtype=float) for v in variables}
                    for m in ("vrmse", "nrmse", "correlation")}
        for m in per_step:
            per_step[m]["persistence (mean)"] = np.array(summary["baseline_persistence"]["per_step"][m]["mean"],
                                                         dtype=float)
        report.plot_error_growth(per_step, out.parent / "error_growth.png",
                                 thresholds={"correlation": correlation_threshold}, title=title)
        if any(mean_spectra.values()):
            report.plot_spectra({v: sp for v, sp in mean_spectra.items() if sp}, out.parent / "spectra.png",
                                title=title)
    report.plot_snapshots({v: np.stack(a) for v, a in snaps["truth"].items()},
                          {v: np.stack(a) for v, a in snaps["pred"].items()}, shown, out.parent / "snapshots.png",
                          title=f"{title}, trajectory {ids[0]}")
    print(f"sciformer rollout: wrote {out} and {summary_path} ({len(ids)} trajectories × {plan.steps} steps, "
          f"{wall:.1f} s)")
    return out
