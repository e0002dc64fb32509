"""SeriesDataModule: benchmark window counts, lookback into the previous split, variate subsets, mixtures."""

import numpy as np
import pandas as pd
import pytest
import torch

from sciformer.data.series import SeriesStore, convert_csv, time_features
from sciformer.data.series_module import SeriesDataModule
from sciformer.errors import DataError


def _store(tmp_path, name, n, cols, seed=0):
    t = pd.date_range("2020-01-01", periods=n, freq="h")
    v = np.random.default_rng(seed).normal(size=(n, len(cols)))
    pd.DataFrame(v, columns=cols).assign(date=t)[["date", *cols]].to_csv(tmp_path / f"{name}.csv", index=False)
    return str(convert_csv(tmp_path / f"{name}.csv", tmp_path / f"{name}.zarr"))


def test_etth1_window_counts_and_borders(tmp_path, shared_data):
    src = shared_data / "timeseries" / "ETTh1.csv"
    if not src.exists():
        pytest.skip("ETTh1.csv not in shared data")
    path = convert_csv(src, tmp_path / "etth1.zarr")
    dm = SeriesDataModule([str(path)], lookback=96, horizon=96, eval_batch_size=1000)
    dm.setup()
    assert len(dm.windows("train")[0]) == 8449 and len(dm.windows("val")[0]) == 2785
    assert len(dm.windows("test")[0]) == 2785  # every test window is scored, batched
    assert sum(b["y"].shape[0] for b in dm.test_dataloader()) == 2785
    z = SeriesStore(path).standardised()
    first = next(iter(dm.val_dataloader()))
    np.testing.assert_array_equal(first["y"][0, 0].numpy(), z[8640])  # first val target = first val row
    np.testing.assert_array_equal(first["x"][0].numpy(), z[8640 - 96: 8640])  # its lookback is in train
    marks = time_features(SeriesStore(path).time[8640 - 96: 8640], "h")
    np.testing.assert_array_equal(first["x_mark"][0].numpy(), marks)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (32, 96, 7) and batch["x_mark"].shape == (32, 96, 4) and batch["y"].shape == (32, 96, 7)
    assert len(dm.train_dataloader()) == 8449 // 32  # last incomplete batch dropped, as the benchmark


def test_variate_subset_and_few_windows(tmp_path):
    path = _store(tmp_path, "s", 400, ["a", "b", "c", "d", "e"])  # 280 / 40 / 80 rows
    dm = SeriesDataModule([path], lookback=24, horizon=12, batch_size=4, train_variates=2, train_windows=10)
    assert next(iter(dm.train_dataloader()))["x"].shape == (4, 24, 2)
    assert next(iter(dm.val_dataloader()))["y"].shape[-1] == 2
    assert next(iter(dm.test_dataloader()))["y"].shape[-1] == 5  # unseen variates at test time
    w = dm.windows("train")[0]
    assert len(w) == 10 and w.first == 280 - 12 - 24 - 9  # the last 10 training windows
    z = SeriesStore(path).standardised()
    np.testing.assert_array_equal(w.__getitems__([9])["y"][0].numpy(), z[268:280, :2])


def test_mixture_batches_come_from_one_store(tmp_path):
    a = _store(tmp_path, "a", 300, ["x", "y"], seed=1)
    b = _store(tmp_path, "b", 500, ["p", "q", "r"], seed=2)
    dm = SeriesDataModule([a, b], lookback=24, horizon=12, batch_size=8, eval_batch_size=16)
    n_train = (210 - 36 + 1) // 8 + (350 - 36 + 1) // 8
    batches = list(dm.train_dataloader())
    assert len(batches) == n_train
    assert {b_["x"].shape[-1] for b_ in batches} == {2, 3} and all(b_["x"].shape[0] == 8 for b_ in batches)
    assert sum(b_["y"].shape[0] for b_ in dm.test_dataloader()) == (60 + 1 - 12) + (100 + 1 - 12)
    assert dm.spec["stores"][1]["variates"] == ["p", "q", "r"]


def test_bad_windows_are_clear_errors(tmp_path):
    path = _store(tmp_path, "s", 100, ["a"])  # 70 training rows
    with pytest.raises(DataError, match="training split has only 70"):
        SeriesDataModule([path], lookback=60, horizon=20)
    with pytest.raises(DataError, match="time_features"):
        SeriesDataModule([path], lookback=8, horizon=4, time_features="hourly")


def test_loader_resumes_mid_epoch(tmp_path):
    path = _store(tmp_path, "s", 300, ["a", "b"])
    dm = SeriesDataModule([path], lookback=24, horizon=12, batch_size=8, seed=3)
    loader = dm.train_dataloader()
    it = iter(loader)
    seen = [next(it)["x"] for _ in range(3)]
    state = loader.state_dict()
    rest = [b["x"] for b in it]
    again = SeriesDataModule([path], lookback=24, horizon=12, batch_size=8, seed=3).train_dataloader()
    again.load_state_dict(state)
    resumed = [b["x"] for b in again]
    assert len(seen) + len(resumed) == len(loader)
    assert all(torch.equal(u, v) for u, v in zip(rest, resumed))
