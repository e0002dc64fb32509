"""Per-variable z-score normalisation, with statistics pooled over stores and overridable from a checkpoint.

Statistics are keyed by variable name (never by channel position), so a checkpoint's statistics apply to the
variables it knows and a new store's statistics fill in the rest (DECISIONS: "Normalisation statistics travel
with the checkpoint").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

MIN_STD = 1e-8  # constant fields (e.g. Poseidon's padded rho = 1) keep std 1 instead of dividing by zero

# Poseidon (scOT/problems/fluids/normalization_constants.py CONSTANTS; tracer_mean/std)
_NS = {"u": (0.0, 0.391), "v": (0.0, 0.356), "tracer": (0.19586183, 0.37)}
# scOT/problems/fluids/normalization_constants.py CONSTANTS (rho, u, v, p) and compressible.py mean_pressure
_CE = {"rho": (0.80, 0.31), "u": (0.0, 0.391), "v": (0.0, 0.356)}
CE_PRESSURE = {"CE-Gauss": 2.513, "CE-KH": 1.0, "CE-RP": 0.215, "CE-CRP": 0.553, "CE-RPUI": 1.33}
# Normalisation constants of Poseidon's dataset classes (shared/anchors/poseidon.md §2.2; camlab-ethz/poseidon
# scOT/problems/*), per data set and variable: (mean, std). A lazily read Poseidon file uses them; variables
# Poseidon never normalises are absent (their statistics come from the data).
POSEIDON_PRESETS: dict[str, dict[str, tuple[float, float]]] = {
    "NS-Sines": _NS, "NS-Gauss": _NS, "NS-PwC": _NS, "NS-SVS": _NS, "NS-BB": _NS, "NS-SL": _NS,
    **{k: {**_CE, "p": (off, 0.185)} for k, off in CE_PRESSURE.items()},
    "FNS-KF": {"u": (-2.2424793e-13, 0.22017328), "v": (4.1510376e-12, 0.22078253)},
    "CE-RM": {"rho": (1.1964245, 0.5543239), "u": (-7.164812e-06, 0.24304213), "v": (2.8968952e-06, 0.2430597),
              "p": (1.5648036, 0.89639103)},
    "GCE-RT": {"rho": (0.8970493, 0.12857835), "u": (4.0316996e-13, 0.014896976),
               "v": (-1.3858967e-13, 0.014896975), "p": (0.7133829, 0.21293919), "phi": (-1.7055787, 0.40131348)},
    "Wave-Layer": {"u": (0.03467443, 0.10442422), "c": (3498.564, 647.844)},
    "Wave-Gauss": {"u": (0.03343763, 0.11718791), "c": (2618.459, 601.517)},
    "ACE": {"u": (0.002484262, 0.65351176)},
    "Poisson-Gauss": {"source": (0.014822, 4.755139), "solution": (0.00056035, 0.02401226)},
    "SE-AF": {"shape": (0.0, 1.0), "rho": (0.92984116, 0.10864315)},
    "Helmholtz": {"a": (1.0, 1.0), "bc": (0.0, 1.0), "u": (0.11523915668552, 0.8279975746000605)},
}


def pooled_stats(parts: Iterable[tuple[Mapping[str, Mapping[str, float]], Mapping[str, float]]]) -> dict[str, dict]:
    """Combine per-store ``(stats, counts)`` into one mean/std per variable (exact pooled moments)."""
    acc: dict[str, list[float]] = {}
    single: dict[str, dict | None] = {}  # a variable from one store keeps its statistics bit for bit
    for stats, counts in parts:
        for name, s in stats.items():
            single[name] = None if name in single else {"mean": float(s["mean"]), "std": float(s["std"])}
            n, m, m2 = float(counts[name]), float(s["mean"]), float(s["std"]) ** 2 * float(counts[name])
            if name not in acc:
                acc[name] = [n, m, m2]
                continue
            n0, m0, q0 = acc[name]
            tot = n0 + n
            d = m - m0
            acc[name] = [tot, m0 + d * n / tot, q0 + m2 + d * d * n0 * n / tot]
    return {k: single[k] or {"mean": v[1], "std": float(np.sqrt(v[2] / v[0])) if v[0] else 0.0}
            for k, v in acc.items()}


class Normalizer:
    """z-score by variable name: ``(x − mean) / std``; std below ``MIN_STD`` counts as 1."""

    def __init__(self, stats: Mapping[str, Mapping[str, float]]):
        self.stats = {k: {"mean": float(v["mean"]), "std": float(v["std"])} for k, v in stats.items()}

    def _ms(self, name: str) -> tuple[float, float]:
        s = self.stats.get(name, {"mean": 0.0, "std": 1.0})
        return s["mean"], (s["std"] if s["std"] > MIN_STD else 1.0)

    def normalize(self, name: str, x: np.ndarray) -> np.ndarray:
        m, s = self._ms(name)
        return ((x - np.float32(m)) * np.float32(1.0 / s)).astype(np.float32, copy=False)

    def denormalize(self, name: str, x):
        m, s = self._ms(name)
        return x * s + m

    def channel_arrays(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Means and stds [C] for a channel list (for de-normalising a whole [B, C, ...] tensor)."""
        ms = [self._ms(n) for n in names]
        return np.array([m for m, _ in ms], np.float32), np.array([s for _, s in ms], np.float32)

    def denormalize_channels(self, x, names: Sequence[str]):
        """De-normalise a channels-first array or tensor ``[B, C, *spatial]`` whose channels are ``names``."""
        mean, std = self.channel_arrays(names)
        shape = (1, len(names)) + (1,) * (x.ndim - 2)
        if hasattr(x, "new_tensor"):  # torch
            return x * x.new_tensor(std).view(shape) + x.new_tensor(mean).view(shape)
        return x * std.reshape(shape) + mean.reshape(shape)
