"""The data side of the training recipe (issue 17): rms normalisation, data-set-balanced sampling over a mixture
of stores, and ``spec["delta_scale"]``, each checked against a float64 hand computation from the raw arrays."""

import numpy as np
import pytest
import torch

import sciformer.data.loader as loader_mod
from sciformer.data.fields import FieldDataModule
from sciformer.data.loader import EpochSampler
from sciformer.data.store import write_store
from sciformer.errors import DataError

T, X, Y = 5, 8, 8
ALL_TRAIN = (1.0, 0.0, 0.0)  # every trajectory trains: store sizes are exactly the trajectory counts


def _store(path, n, seed, offset, extra=(), T=T):
    """A random walk in time (so one step's increment has its own mean and std, unlike the field) around a
    large offset (so rms and z-score differ), plus a static coefficient ``c``; ``extra`` states mark the store."""
    rng = np.random.default_rng(seed)
    walk = lambda m, drift: (rng.normal(m, 1.5, (n, 1, X, Y))  # noqa: E731
                             + np.cumsum(rng.normal(drift, 0.4, (n, T, X, Y)), axis=1)).astype(np.float32)
    data = {"u": walk(offset, 0.1 * (seed + 1))} | {v: walk(-offset, 0.2) for v in extra}
    data["c"] = rng.normal(offset / 2, 2.0, (n, X, Y)).astype(np.float32)
    variables = {v: {"role": "state"} for v in ("u", *extra)} | {"c": {"role": "coefficient"}}
    write_store(path, data, variables, np.linspace(0.0, 1.0, T), {"x": np.arange(X) / X, "y": np.arange(Y) / Y},
                {"boundary_conditions": {"x": "periodic", "y": "periodic"}})
    return data


@pytest.fixture
def two_stores(tmp_path):
    """2 trajectories of 5 snapshots and 10 of 7 (different lengths weigh value and increment statistics
    differently when pooling); only the small store has ``w`` (its mask column tells the stores apart)."""
    a = _store(tmp_path / "a.zarr", 2, 0, 3.0, extra=("w",))
    b = _store(tmp_path / "b.zarr", 10, 1, 5.0, T=7)
    return [str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")], a, b


def _pool(a, b, name):
    return np.concatenate([a[name].astype(np.float64).ravel(), b[name].astype(np.float64).ravel()])


# ---- rms normalisation --------------------------------------------------------------------------------
def test_rms_stats_and_batches_match_hand_computation(two_stores):
    paths, a, b = two_stores
    dm = FieldDataModule(paths, sampler="next-step", batch_size=6, splits=ALL_TRAIN, normalization="rms")
    stats = dm.spec["stats"]
    for name in ("u", "c"):
        x = _pool(a, b, name)
        assert stats[name]["mean"] == 0.0
        assert stats[name]["std"] == pytest.approx(np.sqrt(x.mean() ** 2 + x.std() ** 2), rel=1e-10)
        assert stats[name]["std"] == pytest.approx(np.sqrt((x ** 2).mean()), rel=1e-10)
    assert stats["w"]["std"] == pytest.approx(np.sqrt((a["w"].astype(np.float64) ** 2).mean()), rel=1e-10)
    zscore = FieldDataModule(paths, splits=ALL_TRAIN).spec["stats"]
    assert abs(zscore["u"]["std"] - stats["u"]["std"]) > 1.0  # the offset matters: rms is not z-score's std

    loader = dm.train_dataloader()
    drawn = loader.epoch_sampler.indices()[:6]
    batch = next(iter(loader))
    data = dm.dataset("train")
    for k, n in enumerate(drawn):
        part, m = data.locate(n)
        raw = a if part is data.parts[0] else b
        i, (ti, tj) = part.index.decode(m)
        # float32 output: 1/rms and the product are each rounded once (≤ 2⁻²⁴ relative each)
        rtol = 2.5e-7
        np.testing.assert_allclose(batch["x"][k, 0].numpy(), raw["u"][i, ti] / stats["u"]["std"], rtol=rtol, atol=0)
        np.testing.assert_allclose(batch["y"][k, 0].numpy(), raw["u"][i, tj] / stats["u"]["std"], rtol=rtol, atol=0)
        np.testing.assert_allclose(batch["x"][k, 2].numpy(), raw["c"][i] / stats["c"]["std"], rtol=rtol, atol=0)


def test_rms_override_taken_as_given_and_bad_option(two_stores):
    paths, _, _ = two_stores
    dm = FieldDataModule(paths, splits=ALL_TRAIN, normalization="rms", stats={"u": {"mean": 1.0, "std": 2.0}})
    assert dm.spec["stats"]["u"] == {"mean": 1.0, "std": 2.0}
    with pytest.raises(DataError, match="normalization 'minmax'"):
        FieldDataModule(paths, normalization="minmax")


# ---- data-set-balanced sampling --------------------------------------------------------------------
def _shares(dm, epochs):
    """Per epoch: the fraction of training items drawn from the small store (its mask has ``w``)."""
    loader, w = dm.train_dataloader(), dm.spec["outputs"].index("w")
    out = []
    for _ in range(epochs):
        flags = torch.cat([batch["mask"][:, w] for batch in loader])
        out.append((len(flags), flags.mean().item()))
    return out


def test_balanced_share_and_repetition(two_stores):
    paths, _, _ = two_stores
    common = dict(sampler="next-step", batch_size=8, splits=ALL_TRAIN, seed=5)
    n_small, n = 2 * 4, 2 * 4 + 10 * 6  # 8 and 68 next-step items
    # equal quotas per store each epoch (n // 2 each, n even here), so the share is 0.5 exactly, not just on average
    assert _shares(FieldDataModule(paths, balance=True, **common), 3) == [(n, 0.5)] * 3
    # unbalanced: a permutation of all items, so the share is the size ratio, exactly
    assert _shares(FieldDataModule(paths, **common), 3) == [(n, pytest.approx(n_small / n))] * 3

    sampler = FieldDataModule(paths, balance=True, **common).train_dataloader().epoch_sampler
    orders = []
    for epoch in range(3):
        sampler.epoch = epoch
        order = np.array(sampler.indices())
        counts = np.bincount(order, minlength=n)
        assert set(counts[:n_small]) == {4, 5} and counts[:n_small].sum() == n // 2  # small: 34/8 repeats each
        assert counts[n_small:].max() == 1 and counts[n_small:].sum() == n // 2  # large: subsampled, no repeats
        orders.append(order)
    assert not np.array_equal(orders[0], orders[1])  # seeded by seed + epoch


def test_balanced_odd_length_remainder_and_ranks(monkeypatch):
    s = EpochSampler(13, True, seed=0, groups=[3, 10])
    small = []
    for epoch in range(40):
        s.epoch = epoch
        order = np.array(s.indices())
        assert len(order) == 13
        small.append(int((order < 3).sum()))
    assert set(small) == {6, 7}  # ⌊13/2⌋ or ⌈13/2⌉: the odd item goes to a store drawn at random
    s.epoch = 0
    full = s.indices()
    monkeypatch.setattr(loader_mod, "_rank_world", lambda: (0, 2))
    r0 = s.indices()
    monkeypatch.setattr(loader_mod, "_rank_world", lambda: (1, 2))
    r1 = s.indices()
    assert r0 == full[0::2] and r1 == (full + full[:1])[1::2]  # sharded as the unbalanced order is
    with pytest.raises(DataError, match="summing to the 13 items"):
        EpochSampler(13, True, groups=[3, 9])
    with pytest.raises(DataError, match="shuffle=True"):
        EpochSampler(13, False, groups=[3, 10])


def test_balanced_resume_mid_epoch(two_stores):
    paths, _, _ = two_stores
    make = lambda: FieldDataModule(paths, sampler="next-step", batch_size=5, splits=ALL_TRAIN, seed=2,  # noqa: E731
                                   balance=True).train_dataloader()
    reference = make()
    list(reference)  # epoch 0
    expected = [b["y"] for b in reference]  # epoch 1
    interrupted = make()
    list(interrupted)
    it = iter(interrupted)
    head = [next(it)["y"] for _ in range(3)]
    state = interrupted.state_dict()
    assert state == {"epoch": 1, "consumed_batches": 3}
    resumed = make()
    resumed.load_state_dict(state)
    rest = [b["y"] for b in resumed]
    assert len(head) + len(rest) == len(expected) == 14  # ⌈68 / 5⌉
    for got, want in zip(head + rest, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_single_store_balance_is_unbalanced(tmp_path):
    _store(tmp_path / "a.zarr", 4, 0, 3.0)
    samplers = [FieldDataModule([str(tmp_path / "a.zarr")], balance=flag, splits=ALL_TRAIN, seed=1)
                .train_dataloader().epoch_sampler for flag in (True, False)]
    for epoch in range(3):
        for s in samplers:
            s.epoch = epoch
        assert samplers[0].indices() == samplers[1].indices()
    for groups in ([20], [0, 20]):  # one non-empty block draws exactly the plain permutation
        assert EpochSampler(20, True, 4, groups).indices() == EpochSampler(20, True, 4).indices()


def test_balance_only_in_training(two_stores):
    paths, _, _ = two_stores
    dm = FieldDataModule(paths, balance=True, splits=(0.5, 0.5, 0.0))
    assert dm.train_dataloader().epoch_sampler.groups == [1 * 15, 5 * 28]  # all2all: (K+1)(K+2)/2 per trajectory
    val = dm.val_dataloader().epoch_sampler
    assert val.groups is None and val.indices() == list(range(len(dm.dataset("val"))))


# ---- delta_scale ---------------------------------------------------------------------------------------
def _diffs(a, b, name):
    return np.concatenate([np.diff(a[name].astype(np.float64), axis=1).ravel(),
                           np.diff(b[name].astype(np.float64), axis=1).ravel()])


def test_delta_scale_zscore_and_rms(two_stores):
    paths, a, b = two_stores
    u, du = _pool(a, b, "u"), _diffs(a, b, "u")
    assert abs(du.mean()) > 0.1 * du.std()  # a drift: rms and std of the increment differ
    spec = FieldDataModule(paths, splits=ALL_TRAIN).spec
    assert set(spec["delta_scale"]) == {"u", "w"}  # state outputs only: no static c
    assert spec["delta_scale"]["u"] == pytest.approx(du.std() / u.std(), rel=1e-9)
    dw = np.diff(a["w"].astype(np.float64), axis=1)
    assert spec["delta_scale"]["w"] == pytest.approx(dw.std() / a["w"].astype(np.float64).std(), rel=1e-9)
    rms = FieldDataModule(paths, splits=ALL_TRAIN, normalization="rms").spec["delta_scale"]
    assert rms["u"] == pytest.approx(np.sqrt((du ** 2).mean()) / np.sqrt((u ** 2).mean()), rel=1e-9)
    assert rms["u"] != pytest.approx(spec["delta_scale"]["u"], rel=1e-3)
    # an override's std is the denominator (the normalisation the checkpoint trained with)
    over = FieldDataModule(paths, splits=ALL_TRAIN, normalization="rms", stats={"u": {"mean": 0.0, "std": 4.0}})
    assert over.spec["delta_scale"]["u"] == pytest.approx(np.sqrt((du ** 2).mean()) / 4.0, rel=1e-9)
    tiny = FieldDataModule(paths, splits=ALL_TRAIN, stats={"u": {"mean": 0.0, "std": 1e-12}})
    assert tiny.spec["delta_scale"]["u"] == pytest.approx(du.std(), rel=1e-9)  # std < MIN_STD counts as 1


def test_delta_scale_absent_for_steady_and_lazy_sources(tmp_path):
    rng = np.random.default_rng(0)
    write_store(tmp_path / "p.zarr", {"source": rng.normal(size=(4, X, Y)), "solution": rng.normal(size=(4, X, Y))},
                {"source": {"role": "source"}, "solution": {"role": "solution"}}, None,
                {"x": np.arange(X), "y": np.arange(Y)})
    assert "delta_scale" not in FieldDataModule([str(tmp_path / "p.zarr")], splits=ALL_TRAIN).spec

    netCDF4 = pytest.importorskip("netCDF4")
    _store(tmp_path / "a.zarr", 3, 0, 3.0, extra=("w",))
    vel = rng.normal(size=(4, T, 2, X, Y)).astype(np.float32)
    with netCDF4.Dataset(tmp_path / "NS-SL.nc", "w") as f:  # read lazily: velocity → u, v, no diff statistics
        for d, n in zip(("n", "t", "c", "x", "y"), vel.shape):
            f.createDimension(d, n)
        f.createVariable("velocity", "f4", ("n", "t", "c", "x", "y"))[...] = vel
    spec = FieldDataModule([str(tmp_path / "a.zarr"), str(tmp_path / "NS-SL.nc")], splits=ALL_TRAIN).spec
    assert set(spec["outputs"]) == {"u", "w", "v"}
    assert set(spec["delta_scale"]) == {"w"}  # u and v: the NetCDF part lacks their diff statistics
