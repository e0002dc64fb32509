"""Samplers: pair counts and index decoding (property tests), splits, vocabulary, normalisation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sciformer.data.normalization import Normalizer, pooled_stats
from sciformer.data.samplers import (
    PairIndex,
    Vocabulary,
    all2all_pairs,
    history_windows,
    next_step_pairs,
    snapshot_indices,
    split_trajectories,
)
from sciformer.errors import DataError


@settings(max_examples=60, deadline=None)
@given(n_time=st.integers(1, 40), stride=st.integers(1, 5), cap=st.one_of(st.none(), st.integers(1, 12)))
def test_all2all_count_and_pairs(n_time, stride, cap):
    snaps = snapshot_indices(n_time, stride, cap)
    K = len(snaps) - 1
    assert K + 1 == min(-(-n_time // stride), cap or 10**9)
    pairs = all2all_pairs(snaps)
    assert len(pairs) == (K + 1) * (K + 2) // 2
    assert len({tuple(p) for p in pairs}) == len(pairs)  # no duplicates
    assert all(a <= b and a % stride == 0 and b < n_time for a, b in pairs)
    # Poseidon's enumeration: i outer, j inner, lead time 0 first in each row
    expected = [(stride * i, stride * j) for i in range(K + 1) for j in range(i, K + 1)]
    assert [tuple(p) for p in pairs] == expected
    assert len(next_step_pairs(snaps)) == K


@settings(max_examples=60, deadline=None)
@given(trajs=st.lists(st.integers(0, 1000), min_size=1, max_size=6, unique=True), K=st.integers(0, 8),
       data=st.data())
def test_pair_index_decoding_is_a_bijection(trajs, K, data):
    index = PairIndex(trajs, all2all_pairs(range(K + 1)))
    assert len(index) == len(trajs) * (K + 1) * (K + 2) // 2
    n = data.draw(st.integers(0, len(index) - 1))
    traj, (i, j) = index.decode(n)
    per = (K + 1) * (K + 2) // 2
    assert traj == trajs[n // per]
    # re-encode: position of (i, j) in the row-major upper triangle
    assert n % per == i * (K + 1) - i * (i - 1) // 2 + (j - i)
    seen = {(index.decode(m)[0], *index.decode(m)[1]) for m in range(len(index))}
    assert len(seen) == len(index)
    with pytest.raises(IndexError):
        index.decode(len(index))


def test_poseidon_default_all2all():
    # K=7, stride 2 over 21 snapshots: 36 pairs from snapshots 0, 2, ..., 14 (anchor §2.3)
    pairs = all2all_pairs(snapshot_indices(21, 2, 8))
    assert len(pairs) == 36 and pairs.max() == 14 and tuple(pairs[0]) == (0, 0) and tuple(pairs[-1]) == (14, 14)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 30), h=st.integers(1, 4), horizon=st.integers(1, 3))
def test_history_windows(n, h, horizon):
    w = history_windows(range(n), h, horizon)
    assert len(w) == max(0, n + 1 - h - horizon)
    for row in w:
        assert list(row[:h]) == list(range(row[0], row[0] + h)) and row[h] == row[h - 1] + horizon


def test_splits_are_contiguous_and_complete():
    tr, va, te = split_trajectories(10)
    assert (list(tr), list(va), list(te)) == (list(range(8)), [8], [9])
    tr, va, te = split_trajectories(4, (0.8, 0.1, 0.1))  # tiny stores still get a val and a test trajectory
    assert (len(tr), len(va), len(te)) == (2, 1, 1)
    tr, va, te = split_trajectories(100, (0.5, 0.1, 0.1))  # fractions below 1: train is f·n
    assert (len(tr), va, te) == (50, range(80, 90), range(90, 100))
    assert [len(r) for r in split_trajectories(1)] == [1, 0, 0]  # too few for val/test: train only
    with pytest.raises(DataError):
        split_trajectories(2, (0.2, 0.4, 0.4))  # val and test take both
    with pytest.raises(DataError):
        split_trajectories(10, (0.8, 0.3, 0.1))


class _Src:
    def __init__(self, path, roles, steady=False):
        self.path, self.roles, self.variables, self.steady = path, roles, list(roles), steady


def test_vocabulary_union_order_and_roles():
    a = _Src("a", {"u": "state", "v": "state", "c": "coefficient"})
    b = _Src("b", {"rho": "state", "u": "state", "v": "state", "p": "state"})
    vocab = Vocabulary.from_sources([a, b])
    assert vocab.order == ["u", "v", "c", "rho", "p"]
    assert vocab.inputs == ["u", "v", "rho", "p", "c"] and vocab.outputs == ["u", "v", "rho", "p"]
    vocab = Vocabulary.from_sources([a], variables=["rho", "u", "v", "p", "c"])  # pad to Poseidon's 4 channels
    assert vocab.outputs == ["rho", "u", "v", "p"] and vocab.inputs == ["rho", "u", "v", "p", "c"]
    steady = Vocabulary.from_sources([_Src("p", {"source": "source", "solution": "solution"}, steady=True)])
    assert steady.inputs == ["source"] and steady.outputs == ["solution"]
    with pytest.raises(DataError, match="role"):
        Vocabulary.from_sources([a, _Src("c", {"c": "state"})])
    with pytest.raises(DataError, match="steady"):
        Vocabulary.from_sources([a, _Src("p", {"solution": "solution"}, steady=True)])


def test_pooled_stats_equal_concatenation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(1, 2, 1000), rng.normal(-3, 0.5, 300)
    pooled = pooled_stats([({"u": {"mean": x.mean(), "std": x.std()}}, {"u": x.size}),
                           ({"u": {"mean": y.mean(), "std": y.std()}}, {"u": y.size})])
    z = np.concatenate([x, y])
    assert pooled["u"]["mean"] == pytest.approx(z.mean(), rel=1e-12)
    assert pooled["u"]["std"] == pytest.approx(z.std(), rel=1e-12)


def test_normalizer_round_trip_and_constant_fields():
    n = Normalizer({"u": {"mean": 2.0, "std": 4.0}, "rho": {"mean": 1.0, "std": 0.0}})
    a = np.array([2.0, 6.0], np.float32)
    np.testing.assert_allclose(n.normalize("u", a), [0.0, 1.0])
    np.testing.assert_allclose(n.normalize("rho", np.ones(2, np.float32)), [0.0, 0.0])  # std 0 → 1
    import torch

    x = torch.tensor([[[0.0, 1.0]], [[0.5, -1.0]]]).view(1, 2, 2)
    out = n.denormalize_channels(x, ["u", "rho"])
    torch.testing.assert_close(out, torch.tensor([[[2.0, 6.0], [1.5, 0.0]]]))
