"""FieldDataModule: all2all or next-step pairs from one or several gridded-field stores, for operator tasks.

Batches: ``x`` [B, C_in, *S] (states at t_i, then static fields; normalised), ``y`` [B, C_out, *S] (states at
t_j), ``t`` [B] lead time in units of the store's time span (absent for steady stores, where ``x`` holds the
static inputs and ``y`` the solution), ``mask`` [B, C_out] (0 = the store lacks that variable: never scored).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sciformer.data.conventions import STATIC_ROLES, source_span
from sciformer.data.formats import WellCollection, open_source
from sciformer.data.loader import ResumableLoader
from sciformer.data.module import DataModule
from sciformer.data.normalization import Normalizer, pooled_stats
from sciformer.data.samplers import FieldPairs, Mixture, Vocabulary, collate, mixture, split_trajectories
from sciformer.errors import DataError

# Poseidon's validation and test sizes by data set (shared/anchors/poseidon.md §2.1 table, §2.4): train is
# [0, N − N_val − N_test), val the next N_val, test the last N_test (scOT/problems/base.py 219-236, 329-364).
POSEIDON_SPLITS = {
    **{k: (120, 240) for k in ("NS-Sines", "NS-Gauss", "NS-PwC", "NS-SVS", "NS-BB", "NS-SL", "FNS-KF", "CE-RP",
                               "CE-CRP", "CE-KH", "CE-Gauss", "CE-RPUI", "SE-AF", "Poisson-Gauss")},
    "CE-RM": (100, 130), "GCE-RT": (100, 130), "Wave-Layer": (60, 240), "Wave-Gauss": (60, 240), "ACE": (60, 240),
    "Helmholtz": (128, 512),
}
WELL_FOLDERS = {"train": "train", "val": "valid", "test": "test"}


def poseidon_splits(source) -> tuple[range, range, range] | None:
    """Poseidon's index ranges for a Poseidon file (or a store converted from one), or None when the source is
    not a known Poseidon data set or holds too few trajectories for them (a subset: fractions apply)."""
    gen = source.attrs.get("generator") if isinstance(getattr(source, "attrs", None), dict) else None
    if not isinstance(gen, dict) or gen.get("name") != "poseidon":
        return None
    sizes = POSEIDON_SPLITS.get(str(gen.get("dataset", "")).replace(".time", ""))
    n = int(source.n_trajectories)
    if sizes is None or n <= sum(sizes):
        return None
    n_val, n_test = sizes
    return range(0, n - n_val - n_test), range(n - n_val - n_test, n - n_test), range(n - n_test, n)


def _counts(source) -> dict[str, float]:
    """Number of values behind each variable's statistics (to pool statistics across stores)."""
    n = float(source.n_trajectories)
    for d in source.spatial_shape:
        n *= d
    return {v: n * (1 if source.is_static(v) else len(source.time)) for v in source.variables}


def _diff_counts(source) -> dict[str, float]:
    """Number of one-step differences behind each variable's diff statistics (T − 1 per trajectory)."""
    n = float(source.n_trajectories) * (len(source.time) - 1)
    for d in source.spatial_shape:
        n *= d
    return {v: n for v in getattr(source, "diff_stats", {})}


class FieldDataModule(DataModule):
    """Pairs from gridded-field stores: zarr stores, or upstream data read lazily where it lives (a Well dataset
    directory, a PDEBench HDF5 file, a Poseidon NetCDF file), in any mixture.

    Args:
        stores: store paths or URLs (a mixture when several; they must share a grid and be all steady or all
            time-dependent). A Well dataset directory (``data/{train,valid,test}/*.hdf5``) serves its
            ``train``/``valid``/``test`` folders as the train/val/test splits.
        sampler: "all2all" (Poseidon: every i ≤ j) or "next-step".
        variables: the global variable order; default: the union of the stores' variables in store order.
            A variable that no store has is an always-masked output (e.g. rho for incompressible data).
        batch_size, num_workers: DataLoader settings (each worker opens its own store handles).
        splits: train/val/test fractions, contiguous by trajectory within each store (zarr stores, PDEBench files,
            Poseidon files too small for Poseidon's ranges).
        native_splits: use the upstream splits where they exist (default): a Well directory's folders, and
            for Poseidon files (and stores converted from them) Poseidon's index ranges: train from 0, val
            ``[N − N_val − N_test, N − N_test)``, test the last ``N_test`` (120/240 for most; CE-RM and GCE-RT
            100/130; Wave and ACE 60/240; Helmholtz 128/512). False: fractions for Poseidon too.
        train_trajectories: use only the first N training trajectories of each store (sample-count sweeps).
        time_stride, max_snapshots: snapshots 0, stride, 2·stride, … (at most max_snapshots); Poseidon's
            default all2all is time_stride=2, max_snapshots=8 (36 pairs per trajectory).
        stats: {name: {"mean", "std"}} overriding the stores' statistics (e.g. a checkpoint's), taken as given
            (already in that checkpoint's normalisation).
        normalization: "zscore" ((x − mean) / std) or "rms" (x / sqrt(mean² + std²): scale only, so zero
            stays zero and signs and ratios survive), per variable name, pooled over stores;
            rms is stored as stats {"mean": 0, "std": rms}, so every consumer of ``spec["stats"]`` is unchanged.
        balance: draw every store equally often in each training epoch (same epoch length; a small store's
            items repeat, a large store's are subsampled), so a big data set does not drown a small one.
        seed: shuffling seed of the training loader.
        predict_static: also predict (and score) static fields, Poseidon's convention (DECISIONS: for converted
            Poseidon checkpoints); by default static fields are inputs only.
    """

    def __init__(self, stores: list[str], sampler: str = "all2all", variables: list[str] | None = None,
                 batch_size: int = 16, num_workers: int = 0, splits: tuple[float, float, float] = (0.8, 0.1, 0.1),
                 train_trajectories: int | None = None, time_stride: int = 1, max_snapshots: int | None = None,
                 stats: dict | None = None, seed: int = 0, predict_static: bool = False, native_splits: bool = True,
                 normalization: str = "zscore", balance: bool = False):
        super().__init__()
        if not stores:
            raise DataError("FieldDataModule needs at least one store")
        if sampler not in ("all2all", "next-step"):
            raise DataError(f"unknown sampler {sampler!r}; use 'all2all' or 'next-step'")
        if train_trajectories is not None and train_trajectories < 1:
            raise DataError(f"train_trajectories must be ≥ 1, got {train_trajectories}")
        if normalization not in ("zscore", "rms"):
            raise DataError(f"unknown normalization {normalization!r}; use 'zscore' or 'rms'")
        self.save_hyperparameters()
        self.stores = [str(s) for s in stores]
        self.sampler, self.batch_size, self.num_workers = sampler, batch_size, num_workers
        self.splits, self.train_trajectories = tuple(splits), train_trajectories
        self.time_stride, self.max_snapshots, self.seed = time_stride, max_snapshots, seed
        self.native_splits, self.normalization, self.balance = native_splits, normalization, bool(balance)
        # a Well directory's entry is its training split (metadata, statistics); other splits open on demand
        self.sources = [open_source(s) for s in self.stores]
        self._split_sources: dict[tuple[int, str], Any] = {}
        self.vocab = Vocabulary.from_sources(self.sources, variables, predict_static)
        pooled = pooled_stats((s.stats, _counts(s)) for s in self.sources)
        missing = [v for s in self.sources for v in s.variables if v not in pooled and v in self.vocab.order]
        if missing and not all(v in (stats or {}) for v in missing):
            raise DataError(f"no statistics for {sorted(set(missing))}; pass stats= or rebuild the store")
        if normalization == "rms":
            pooled = {v: {"mean": 0.0, "std": float(np.hypot(s["mean"], s["std"]))} for v, s in pooled.items()}
        self.stats = {v: pooled.get(v, {"mean": 0.0, "std": 1.0}) for v in self.vocab.order}
        self.stats.update({k: {"mean": float(v["mean"]), "std": float(v["std"])} for k, v in (stats or {}).items()
                           if k in self.vocab.order})
        self.normalizer = Normalizer(self.stats)
        self.delta_scale = None if self.vocab.steady else self._delta_scale()
        self.datasets: dict[str, Any] = {}

    def _delta_scale(self) -> dict[str, float]:
        """Per state output: the std (zscore) or rms (rms) of one stored step's increment (one step of the
        store, whatever ``time_stride``), in normalised units: the scale a delta target is divided by. A variable
        that some store holding it has no diff statistics for (a lazily read upstream file) is left out."""
        diff = pooled_stats((getattr(s, "diff_stats", {}), _diff_counts(s)) for s in self.sources)
        out = {}
        for v in self.vocab.outputs:
            having = [s for s in self.sources if v in s.variables]
            if self.vocab.roles[v] in STATIC_ROLES or not having or \
                    any(v not in getattr(s, "diff_stats", {}) for s in having):
                continue
            d = diff[v]
            step = d["std"] if self.normalization == "zscore" else float(np.hypot(d["mean"], d["std"]))
            out[v] = step / self.normalizer._ms(v)[1]  # the normaliser's divisor (MIN_STD semantics)
        return out

    # ---- metadata ----------------------------------------------------------------------------
    @property
    def spec(self) -> dict[str, Any]:
        first = self.sources[0]
        extra = {} if self.delta_scale is None else {"delta_scale": dict(self.delta_scale)}
        return {
            "layout": "fields",
            "inputs": list(self.vocab.inputs),
            "outputs": list(self.vocab.outputs),
            "in_channels": len(self.vocab.inputs),
            "out_channels": len(self.vocab.outputs),
            "stats": {k: dict(v) for k, v in self.stats.items()},
            **extra,
            "spatial_shape": list(first.spatial_shape),
            "steady": bool(first.steady),
            "boundary_conditions": dict(first.boundary_conditions),
            "roles": dict(self.vocab.roles),
            "time_span": None if first.steady else source_span(first),
            "sampler": self.sampler,
            "stores": [{"path": s.path, "variables": list(s.variables), "n_trajectories": int(s.n_trajectories),
                        "boundary_conditions": dict(s.boundary_conditions)} for s in self.sources],
        }

    def source(self, k: int, stage: str):
        """Store ``k``'s source for ``stage``: the split's own collection for a Well directory."""
        src = self.sources[k]
        if not isinstance(src, WellCollection) or WELL_FOLDERS[stage] == src.split:
            return src
        if (k, stage) not in self._split_sources:
            other = WellCollection(src.root, WELL_FOLDERS[stage])
            if (other.variables, other.roles, tuple(other.spatial_shape)) != \
                    (src.variables, src.roles, tuple(src.spatial_shape)):
                raise DataError(f"{other.path}: variables {other.variables} on grid {other.spatial_shape} differ "
                                f"from the {src.split} split's {src.variables} on {src.spatial_shape}")
            other.stats = src.stats  # normalise every split with the training statistics
            other.lead_time_span = None if src.steady else source_span(src)  # and measure its lead times alike
            self._split_sources[(k, stage)] = other
        return self._split_sources[(k, stage)]

    def trajectories(self, stage: str, source) -> range:
        if isinstance(source, WellCollection):  # the stage's own folder
            train = val = test = range(source.n_trajectories)
        else:
            native = poseidon_splits(source) if self.native_splits else None
            train, val, test = native or split_trajectories(source.n_trajectories, self.splits)
        if stage == "train":
            if self.train_trajectories is not None:
                if self.train_trajectories > len(train):
                    raise DataError(f"{source.path}: train_trajectories={self.train_trajectories} but only "
                                    f"{len(train)} training trajectories exist")
                train = train[: self.train_trajectories]
            return train
        return {"val": val, "test": test}[stage]

    def dataset(self, stage: str):
        if stage not in self.datasets:
            sources = [self.source(k, stage) for k in range(len(self.sources))]
            parts = [FieldPairs(s, self.vocab, self.normalizer, self.trajectories(stage, s), self.sampler,
                                self.time_stride, self.max_snapshots) for s in sources]
            self.datasets[stage] = mixture(parts)
        return self.datasets[stage]

    # ---- Lightning hooks ---------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for s in wanted.get(stage, ("train", "val", "test")):
            self.dataset(s)

    def _loader(self, stage: str, shuffle: bool) -> ResumableLoader:
        data = self.dataset(stage)
        if len(data) == 0:
            raise DataError(f"the {stage} split is empty (splits={list(self.splits)}, stores={self.stores})")
        groups = data.sizes if self.balance and shuffle and isinstance(data, Mixture) else None
        return ResumableLoader(data, batch_size=self.batch_size, shuffle=shuffle, seed=self.seed, groups=groups,
                               num_workers=self.num_workers, collate_fn=collate)

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)

    def predict_dataloader(self):
        return self._loader("test", shuffle=False)
