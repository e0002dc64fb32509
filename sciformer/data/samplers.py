"""Which (trajectory, input time, target time) items a field data set serves, and how channels are laid out.

- :func:`all2all_pairs`: Poseidon's all2all: every ``i <= j`` among K+1 snapshots, ``(K+1)(K+2)/2`` pairs,
  enumerated with ``i`` outer and ``j`` inner as Poseidon does (lead time 0 included).
- :func:`next_step_pairs`: ``(s_k, s_{k+1})``, K pairs.
- :func:`history_windows`: ``history`` consecutive snapshots → the snapshot ``horizon`` steps later.
- :func:`split_trajectories`: contiguous train/val/test ranges by trajectory (Poseidon's order).
- :class:`Vocabulary`: the global variable order shared by a mixture of stores; a store lacking a variable
  gets a zero (normalised-mean) input channel and a 0 in the output mask, so padded channels are never scored.
- :class:`FieldPairs` / :func:`mixture`: the torch Datasets built from these.

A *source* is anything with FieldStore's read interface (``variables, roles, steady, time, spatial_shape,
n_trajectories, is_static(name), read(name, i, t)``), so converted stores and lazily read external files mix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from sciformer.data.conventions import STATIC_ROLES, lead_time, snapshot_times, source_span
from sciformer.data.normalization import Normalizer
from sciformer.errors import DataError


# ---- snapshot pairs -----------------------------------------------------------------------------
def snapshot_indices(n_time: int, stride: int = 1, max_snapshots: int | None = None) -> np.ndarray:
    """The K+1 snapshots used: 0, stride, 2·stride, … (at most ``max_snapshots`` of them)."""
    if stride < 1:
        raise DataError(f"time_stride must be ≥ 1, got {stride}")
    idx = np.arange(0, n_time, stride)
    if max_snapshots is not None:
        if max_snapshots < 1:
            raise DataError(f"max_snapshots must be ≥ 1, got {max_snapshots}")
        idx = idx[:max_snapshots]
    return idx


def all2all_pairs(snapshots: Sequence[int]) -> np.ndarray:
    """All ``(s_i, s_j)`` with ``i <= j`` [P, 2], ``i`` outer: P = (K+1)(K+2)/2 for K+1 snapshots."""
    s = list(snapshots)
    return np.array([(s[i], s[j]) for i in range(len(s)) for j in range(i, len(s))], dtype=np.int64).reshape(-1, 2)


def next_step_pairs(snapshots: Sequence[int]) -> np.ndarray:
    """``(s_k, s_{k+1})`` for k < K [K, 2]."""
    s = list(snapshots)
    return np.array([(s[k], s[k + 1]) for k in range(len(s) - 1)], dtype=np.int64).reshape(-1, 2)


def history_windows(snapshots: Sequence[int], history: int, horizon: int = 1) -> np.ndarray:
    """Rows ``[s_{k-h+1}, …, s_k, s_{k+horizon}]`` [W, history + 1]; W = K + 2 − history − horizon."""
    if history < 1 or horizon < 1:
        raise DataError(f"history and horizon must be ≥ 1, got {history}, {horizon}")
    s = list(snapshots)
    rows = [s[k - history + 1 : k + 1] + [s[k + horizon]] for k in range(history - 1, len(s) - horizon)]
    return np.array(rows, dtype=np.int64).reshape(-1, history + 1)


class PairIndex:
    """Flat index ``n`` ↔ ``(trajectory, row of pairs)``: trajectory-major, as Poseidon's ``_idx_map``."""

    def __init__(self, trajectories: Sequence[int], pairs: np.ndarray):
        self.trajectories = np.asarray(list(trajectories), dtype=np.int64)
        self.pairs = np.asarray(pairs)
        self.per_trajectory = len(self.pairs)

    def __len__(self) -> int:
        return len(self.trajectories) * self.per_trajectory

    def decode(self, n: int) -> tuple[int, np.ndarray]:
        if not 0 <= n < len(self):
            raise IndexError(f"index {n} outside [0, {len(self)})")
        k, p = divmod(int(n), self.per_trajectory)
        return int(self.trajectories[k]), self.pairs[p]


def split_trajectories(n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> tuple[range, range, range]:
    """Contiguous train/val/test trajectory ranges; val and test sizes round to nearest, each ≥ 1 if its
    fraction is positive and there are enough trajectories; train takes the rest (or ``f_train·n``)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
        raise DataError(f"splits must be three non-negative fractions summing to ≤ 1, got {list(fractions)}")
    f_train, f_val, f_test = fractions
    sizes = [int(round(f * n)) for f in (f_val, f_test)]
    positive = sum(f > 0 for f in fractions)
    sizes = [max(1, s) if f > 0 and n >= positive else s for s, f in zip(sizes, (f_val, f_test))]
    n_val, n_test = sizes
    rest = n - n_val - n_test
    n_train = rest if abs(sum(fractions) - 1) < 1e-9 else min(rest, int(f_train * n))
    if n_train < 0 or (f_train > 0 and n_train == 0):
        raise DataError(f"{n} trajectories are too few for splits {list(fractions)}")
    return range(0, n_train), range(n - n_test - n_val, n - n_test), range(n - n_test, n)


# ---- variable vocabulary --------------------------------------------------------------------------


class Vocabulary:
    """Global variable order and each variable's role; inputs and outputs channel lists.

    Time-dependent: inputs = states at t_i then static fields, outputs = states at t_j.
    Steady: inputs = static fields (source, coefficient, ...), outputs = solution variables.
    """

    def __init__(self, order: Sequence[str], roles: Mapping[str, str], steady: bool, predict_static: bool = False):
        self.order, self.roles, self.steady = list(order), dict(roles), steady
        static = [v for v in self.order if self.roles[v] in STATIC_ROLES]
        dynamic = [v for v in self.order if v not in static]
        self.inputs = static if steady else dynamic + static
        # predict_static: Poseidon's convention (static fields are also targets), for converted checkpoints
        self.outputs = dynamic + static if predict_static and not steady else dynamic

    @classmethod
    def from_sources(cls, sources: Sequence, variables: Sequence[str] | None = None,
                     predict_static: bool = False) -> Vocabulary:
        steady = {bool(s.steady) for s in sources}
        if len(steady) > 1:
            raise DataError("cannot mix steady and time-dependent stores in one data module: "
                            + ", ".join(f"{s.path} ({'steady' if s.steady else 'time-dependent'})" for s in sources))
        is_steady = steady.pop()
        roles: dict[str, str] = {}
        for s in sources:
            for v in s.variables:
                r = "state" if s.roles[v] == "solution" and not s.steady else s.roles[v]
                if roles.setdefault(v, r) != r:
                    raise DataError(f"{s.path}: variable {v!r} has role {s.roles[v]!r} here but {roles[v]!r} in "
                                    "another store; rename one of them")
        if variables is None:
            order = list(roles)
        else:
            order = list(variables)
            if len(set(order)) != len(order):
                raise DataError(f"variables list has duplicates: {order}")
            for v in order:  # a variable no store has is an always-padded output (e.g. rho of incompressible data)
                roles.setdefault(v, "solution" if is_steady else "state")
        vocab = cls(order, {v: roles[v] for v in order}, is_steady, predict_static)
        if not vocab.outputs:
            raise DataError("no output variables (state or solution) among " + str(order))
        return vocab


# ---- datasets -------------------------------------------------------------------------------------
class FieldPairs(Dataset):
    """(input, target) pairs from one source, laid out on a :class:`Vocabulary`, normalised.

    Items: ``x`` [C_in, *S], ``y`` [C_out, *S], ``mask`` [C_out] (1 = the source has that output), and for
    time-dependent sources ``t``: the lead time ``(time[j] − time[i]) / (time[-1] − time[0])`` (with
    per-trajectory time grids: the trajectory's own times over the store's span, :func:`source_span`).
    """

    def __init__(self, source, vocab: Vocabulary, normalizer: Normalizer, trajectories: Sequence[int],
                 sampler: str = "all2all", time_stride: int = 1, max_snapshots: int | None = None):
        self.source, self.vocab, self.norm = source, vocab, normalizer
        if source.steady:
            pairs = np.zeros((1, 2), dtype=np.int64)
            self.span = None
        else:
            snaps = snapshot_indices(len(source.time), time_stride, max_snapshots)
            if sampler == "all2all":
                pairs = all2all_pairs(snaps)
            elif sampler == "next-step":
                pairs = next_step_pairs(snaps)
            else:
                raise DataError(f"unknown sampler {sampler!r}; use 'all2all' or 'next-step'")
            self.span = source_span(source)
        self.index = PairIndex(trajectories, pairs)
        have = set(source.variables)
        self.mask = torch.tensor([1.0 if v in have else 0.0 for v in vocab.outputs])

    def __len__(self) -> int:
        return len(self.index)

    def _fill(self, names: Sequence[str], i: int, t: int | None, out: np.ndarray) -> None:
        """Decode and normalise channels in place (the data loader's hot loop); absent variables stay 0."""
        have = self.source.variables
        fast = hasattr(self.source, "read_into")
        for c, name in enumerate(names):
            if name not in have:
                out[c] = 0.0
                continue
            m, s = self.norm._ms(name)
            if fast:
                self.source.read_into(name, i, t, out[c])
            else:
                out[c] = self.source.read(name, i, t)
            out[c] -= np.float32(m)
            out[c] *= np.float32(1.0 / s)

    def fill(self, n: int, x: np.ndarray, y: np.ndarray) -> float | None:
        """Write item ``n`` into ``x`` [C_in, *S] and ``y`` [C_out, *S]; return its lead time (None if steady)."""
        i, (ti, tj) = self.index.decode(n)
        if self.source.steady:
            self._fill(self.vocab.inputs, i, None, x)
            self._fill(self.vocab.outputs, i, None, y)
            return None
        self._fill(self.vocab.inputs, i, int(ti), x)
        self._fill(self.vocab.outputs, i, int(tj), y)
        times = snapshot_times(self.source, i)  # the trajectory's own grid when grids differ
        return lead_time(times[ti], times[tj], self.span)

    def __getitem__(self, n: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in _gather([(self, n)]).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        return _gather([(self, n) for n in indices])


def _buffer(shape: tuple[int, ...]) -> torch.Tensor:
    """float32 batch buffer; in a DataLoader worker it lives in shared memory (as default_collate's output
    does), so the batch reaches the main process without another copy."""
    if get_worker_info() is None:
        return torch.empty(shape)
    numel = int(np.prod(shape))
    storage = torch.empty(0)._typed_storage()._new_shared(numel, device="cpu")
    return torch.empty(0).new(storage).view(shape)


def _gather(items: Sequence[tuple[FieldPairs, int]]) -> dict[str, torch.Tensor]:
    """A whole batch decoded straight into its batch tensors (no per-item tensors, no collate copy)."""
    first = items[0][0]
    spatial, b = tuple(first.source.spatial_shape), len(items)
    x = _buffer((b, len(first.vocab.inputs), *spatial))
    y = _buffer((b, len(first.vocab.outputs), *spatial))
    xn, yn = x.numpy(), y.numpy()
    times = [ds.fill(n, xn[k], yn[k]) for k, (ds, n) in enumerate(items)]
    out = {"x": x, "y": y, "mask": torch.stack([ds.mask for ds, _ in items])}
    if times[0] is not None:
        out["t"] = torch.tensor(times, dtype=torch.float32)
    return out


def collate(batch):
    """DataLoader ``collate_fn``: batches from ``__getitems__`` are already collated."""
    return batch if isinstance(batch, dict) else default_collate(batch)


class Mixture(Dataset):
    """Concatenation of :class:`FieldPairs` sharing a vocabulary and a grid, with batched fetching."""

    def __init__(self, parts: Sequence[FieldPairs]):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def sizes(self) -> list[int]:
        """Items per part, in order (the blocks of data-set-balanced sampling)."""
        return np.diff(self.offsets).astype(int).tolist()

    def locate(self, n: int) -> tuple[FieldPairs, int]:
        if not 0 <= n < len(self):
            raise IndexError(f"index {n} outside [0, {len(self)})")
        k = int(np.searchsorted(self.offsets, n, side="right")) - 1
        return self.parts[k], int(n - self.offsets[k])

    def __getitem__(self, n: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in _gather([self.locate(n)]).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        return _gather([self.locate(n) for n in indices])


def mixture(datasets: Sequence[FieldPairs]) -> Dataset:
    """Concatenate per-source pair datasets that share a vocabulary and a grid."""
    shapes = {tuple(d.source.spatial_shape) for d in datasets}
    if len(shapes) > 1:
        raise DataError("stores in one mixture must share a grid; got " +
                        ", ".join(f"{d.source.path}: {tuple(d.source.spatial_shape)}" for d in datasets))
    return datasets[0] if len(datasets) == 1 else Mixture(datasets)
