"""SeriesDataModule: forecast windows (lookback → horizon) from one or several series stores.

Batches are dicts: ``x`` [B, L, N] and ``y`` [B, H, N] on the standardised scale (training-rows statistics),
``x_mark`` [B, L, F] time features (absent when ``time_features`` is None), ``loc``/``scale`` [N] to map
values back to physical units, and ``dataset`` [B] (long) the store's id in the data-set vocabulary
(``spec["datasets"]``; read only by models with dataset tokens). Windows follow the benchmark protocol: a
split with rows [a, b) scores every window whose targets lie in [a, b); its lookback may reach back into the
previous split (so the first val/test target is the first row of the split). ETTh1 96→96 gives 8,449 /
2,785 / 2,785 windows.

Several stores form a mixture with different variate counts: every batch comes from one store (an
iTransformer attends over one store's variates), batches of all stores are shuffled together. The assignment
of windows to mixture batches is drawn once from ``seed``; the batch order is reshuffled every epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sciformer.data.loader import ResumableLoader
from sciformer.data.module import DataModule
from sciformer.data.series import TIME_FEATURES, SeriesStore, time_features
from sciformer.errors import DataError


def _as_batch(batch):
    """collate_fn for datasets that already return whole batches (``__getitems__``)."""
    return batch


class SeriesWindows(Dataset):
    """Every window of one split of one store; ``__getitems__`` slices a whole batch at once."""

    def __init__(self, values: torch.Tensor, marks: torch.Tensor | None, rows: tuple[int, int], lookback: int,
                 horizon: int, loc: torch.Tensor, scale: torch.Tensor, name: str = "", max_windows: int | None = None,
                 dataset: int = 0):
        a, b = rows
        first = max(a, lookback)  # first target row
        n = b - horizon - first + 1
        if n <= 0:
            raise DataError(f"{name}: rows [{a}, {b}) hold no window of lookback {lookback} + horizon {horizon}")
        if max_windows is not None:  # the last windows (nearest to validation), for few-window fine-tuning
            first, n = first + max(0, n - max_windows), min(n, max_windows)
        self.values, self.marks, self.loc, self.scale = values, marks, loc, scale
        self.first, self.n, self.L, self.H = first - lookback, n, lookback, horizon
        self.name, self.dataset = name, dataset

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        start = self.first + torch.as_tensor(indices, dtype=torch.long)
        rows = start[:, None] + torch.arange(self.L + self.H)  # [B, L + H]
        w = self.values[rows]  # [B, L + H, N]
        out = {"x": w[:, : self.L], "y": w[:, self.L:], "loc": self.loc, "scale": self.scale,
               "dataset": torch.full((len(start),), self.dataset, dtype=torch.long)}
        if self.marks is not None:
            out["x_mark"] = self.marks[rows[:, : self.L]]
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: (v[0] if k not in ("loc", "scale") else v) for k, v in self.__getitems__([i]).items()}


class MixtureBatches(Dataset):
    """Whole batches drawn from several window sets; each batch from one set. Item k is batch k."""

    def __init__(self, parts: list[SeriesWindows], batch_size: int, shuffle: bool, seed: int, drop_last: bool):
        self.parts, self.batches = parts, []
        g = np.random.default_rng(seed)
        for p, part in enumerate(parts):
            order = g.permutation(len(part)) if shuffle else np.arange(len(part))
            stop = len(order) - (len(order) % batch_size if drop_last else 0)
            self.batches += [(p, order[i: i + batch_size]) for i in range(0, stop, batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        p, idx = self.batches[k]
        return self.parts[p].__getitems__(idx.tolist())


class SeriesDataModule(DataModule):
    """Forecast windows from series stores (``sciformer data convert FILE.csv OUT.zarr --from csv``).

    Args:
        stores: one store, or several for a mixture (different variate counts allowed).
        lookback, horizon: window lengths L and H (the model's ``seq_len``/``pred_len`` are linked to them).
        batch_size: training batch (the benchmark: 32, last incomplete batch dropped).
        eval_batch_size: validation/test batch; every window is scored whatever its value.
        time_features: frequency code of the calendar covariates ("h": the benchmark's 4 hourly features, used
            for every data set by the reference scripts), "auto" (each store's own frequency), or None.
        train_variates: train and validate on the first k variates only; test on all (unseen-variates
            protocol of the iTransformer paper).
        train_windows: keep only the last N training windows of each store (few-window fine-tuning).
        datasets: the data-set vocabulary, names of stores (``SeriesStore.name``); a store's id is its name's
            position, a name not in it gets the unknown id ``len(datasets)``. Pass a checkpoint's
            ``data_spec["datasets"]`` when fine-tuning or testing it, so that ids mean what they meant in
            pretraining whatever the store order (the checkpoint's vocabulary wins, as its statistics do for
            fields). Default: the stores' names in order (stores of one name share an id).
        seed, num_workers, drop_last: loader settings.
    """

    def __init__(self, stores: list[str], lookback: int = 96, horizon: int = 96, batch_size: int = 32,
                 eval_batch_size: int = 256, time_features: str | None = "h", train_variates: int | None = None,
                 train_windows: int | None = None, datasets: list[str] | None = None, seed: int = 0,
                 num_workers: int = 0, drop_last: bool = True):
        super().__init__()
        if isinstance(stores, str):
            stores = [stores]
        if not stores:
            raise DataError("SeriesDataModule needs at least one store")
        if lookback < 2 or horizon < 1:
            raise DataError(f"lookback must be ≥ 2 and horizon ≥ 1, got {lookback} and {horizon}")
        if time_features not in (None, "auto", *TIME_FEATURES):
            raise DataError(f"time_features={time_features!r}: use None, 'auto' or one of {sorted(TIME_FEATURES)}")
        if train_variates is not None and train_variates < 1:
            raise DataError(f"train_variates must be ≥ 1, got {train_variates}")
        self.save_hyperparameters()
        self.stores_paths = [str(s) for s in stores]
        self.lookback, self.horizon = lookback, horizon
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.time_features, self.train_variates, self.train_windows = time_features, train_variates, train_windows
        self.seed, self.num_workers, self.drop_last = seed, num_workers, drop_last
        self.stores = [SeriesStore(p) for p in self.stores_paths]
        if time_features == "auto" and len({len(TIME_FEATURES[s.freq]) for s in self.stores}) > 1:
            raise DataError("time_features='auto' gives stores different covariate counts; choose one code, e.g. 'h'")
        for s in self.stores:
            a, b = s.splits["train"]
            if b - a < lookback + horizon:
                raise DataError(f"{s.path}: lookback {lookback} + horizon {horizon} = {lookback + horizon} rows, "
                                f"but the training split has only {b - a}; shorten the lookback or horizon")
        names = [s.name for s in self.stores]
        if datasets is not None and (isinstance(datasets, str) or len(set(datasets)) != len(datasets)):
            raise DataError(f"datasets must be a list of distinct store names, got {datasets!r}")
        self.vocabulary = [str(d) for d in datasets] if datasets is not None else list(dict.fromkeys(names))
        self.dataset_ids = [self.vocabulary.index(n) if n in self.vocabulary else len(self.vocabulary) for n in names]
        self._tensors: list[tuple[torch.Tensor, torch.Tensor | None]] | None = None
        self.datasets: dict[str, Dataset] = {}

    def _freq(self, store: SeriesStore) -> str | None:
        return store.freq if self.time_features == "auto" else self.time_features

    @property
    def n_time_features(self) -> int:
        return len(TIME_FEATURES[self._freq(self.stores[0])]) if self.time_features else 0

    @property
    def spec(self) -> dict[str, Any]:
        first = self.stores[0]
        return {
            "layout": "series",
            "lookback": self.lookback,
            "horizon": self.horizon,
            "time_features": self.time_features,
            "n_time_features": self.n_time_features,
            "variates": list(first.variates),
            "stats": first.stats(),
            "target": first.target,
            "train_variates": self.train_variates,
            "datasets": list(self.vocabulary),
            "stores": [{"path": s.path, "name": s.name, "variates": list(s.variates), "freq": s.freq,
                        "splits": {k: list(v) for k, v in s.splits.items()}, "dataset": i}
                       for s, i in zip(self.stores, self.dataset_ids)],
        }

    # ---- windows -----------------------------------------------------------------------------
    def tensors(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Standardised values [T, N] and time features [T, F] of every store (read once, a few MB each)."""
        if self._tensors is None:
            self._tensors = []
            for s in self.stores:
                freq = self._freq(s)
                marks = torch.from_numpy(time_features(s.time, freq)) if freq else None
                self._tensors.append((torch.from_numpy(s.standardised()), marks))
        return self._tensors

    def windows(self, stage: str) -> list[SeriesWindows]:
        parts = []
        for s, i, (values, marks) in zip(self.stores, self.dataset_ids, self.tensors()):
            loc = torch.tensor(s.mean, dtype=torch.float32)
            scale = torch.tensor(s.std, dtype=torch.float32)
            if self.train_variates is not None and stage in ("train", "val"):
                k = min(self.train_variates, values.shape[1])
                values, loc, scale = values[:, :k].contiguous(), loc[:k], scale[:k]
            parts.append(SeriesWindows(values, marks, s.splits[stage], self.lookback, self.horizon, loc, scale,
                                       name=f"{s.path} ({stage})",
                                       max_windows=self.train_windows if stage == "train" else None, dataset=i))
        return parts

    def dataset(self, stage: str) -> Dataset:
        if stage not in self.datasets:
            parts = self.windows(stage)
            train = stage == "train"
            if len(parts) == 1 and train:
                self.datasets[stage] = parts[0]
            else:
                size = self.batch_size if train else self.eval_batch_size
                self.datasets[stage] = MixtureBatches(parts, size, shuffle=train, seed=self.seed,
                                                      drop_last=train and self.drop_last)
        return self.datasets[stage]

    # ---- Lightning hooks ---------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for s in wanted.get(stage, ("train", "val", "test")):
            self.dataset(s)

    def _loader(self, stage: str) -> ResumableLoader:
        data = self.dataset(stage)
        if len(data) == 0:
            raise DataError(f"the {stage} split has no complete batch (batch_size={self.batch_size})")
        common = {"seed": self.seed, "num_workers": self.num_workers, "collate_fn": _as_batch}
        if isinstance(data, MixtureBatches):  # items are whole batches
            return ResumableLoader(data, batch_size=None, shuffle=stage == "train", **common)
        return ResumableLoader(data, batch_size=self.batch_size, shuffle=True, drop_last=self.drop_last, **common)

    def train_dataloader(self):
        return self._loader("train")

    def val_dataloader(self):
        return self._loader("val")

    def test_dataloader(self):
        return self._loader("test")

    def predict_dataloader(self):
        return self._loader("test")
