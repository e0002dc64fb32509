"""OperatorTask's loss and validation errors against hand computations."""

import math

import pytest
import torch

from sciformer.tasks.base import warmup_cosine
from sciformer.tasks.operator import default_channel_groups, group_relative_error


def test_default_groups_pair_velocities():
    assert default_channel_groups(["rho", "u", "v", "p"]) == [["u", "v"], ["rho"], ["p"]]
    assert default_channel_groups(["u"]) == [["u"]]


def test_group_relative_l1_hand_computed():
    y = torch.tensor([[[[1.0, -1.0]], [[2.0, 2.0]]]])  # [B=1, C=2, 1, 2]
    pred = torch.tensor([[[[1.5, -1.0]], [[2.0, 1.0]]]])
    mask = torch.ones(1, 2)
    # group {0}: |0.5|/2 = 0.25 ; group {1}: 1/4 ; group {0,1}: 1.5/6
    err = group_relative_error(pred, y, mask, [[0], [1], [0, 1]])
    torch.testing.assert_close(err, torch.tensor([0.25, 0.25, 0.25]))
    err2 = group_relative_error(pred, y, mask, [[0, 1]], p=2)
    torch.testing.assert_close(err2, torch.tensor([math.sqrt(1.25 / 10)]))


def test_masked_channel_is_never_scored():
    y = torch.randn(3, 2, 4, 4)
    pred = y.clone()
    pred[:, 1] += 100.0  # huge error in the padded channel
    mask = torch.tensor([[1.0, 0.0]] * 3)
    err = group_relative_error(pred, y, mask, [[0, 1]], per_sample=True)
    assert torch.all(err == 0)
    assert torch.isnan(group_relative_error(pred, y, mask, [[1]], per_sample=True)).all()


def test_batch_loss_is_ratio_of_sums_not_mean_of_ratios():
    y = torch.tensor([1.0, 10.0]).view(2, 1, 1, 1)
    pred = y + 1.0
    mask = torch.ones(2, 1)
    assert group_relative_error(pred, y, mask, [[0]]).item() == pytest.approx(2 / 11)
    assert group_relative_error(pred, y, mask, [[0]], per_sample=True).flatten().tolist() == pytest.approx([1.0, 0.1])


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 4, 20, 0.1) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 20, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(4, 4, 20, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(12, 4, 20, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert warmup_cosine(20, 4, 20, 0.1) == pytest.approx(0.1)
