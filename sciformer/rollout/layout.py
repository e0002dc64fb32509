"""Channel layout: where each variable sits in the model's input and output, by name from the data spec.

``inputs`` = state variables then static variables (``history`` frames of the states, oldest first, when the
model takes several past frames), ``outputs`` = state variables (plus static ones for Poseidon's
``predict_static`` convention, which are ignored here). Static fields (``STATIC_ROLES``) are re-inserted from
the data at every step, never taken from a prediction; variables the checkpoint knows but the store lacks
(mixture padding) are held at zero (the normalised mean) as during training, only with ``pad_missing=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sciformer.data.conventions import STATIC_ROLES
from sciformer.data.normalization import MIN_STD
from sciformer.errors import CheckpointError


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
