"""OperatorTask's validation errors go through sciformer.metrics: Poseidon's median (numpy's, over all
batches) of the per-sample relative L1 in percent, for the model and the persistence baseline."""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from sciformer import models
from sciformer.tasks.operator import OperatorTask


@dataclass
class ShiftConfig:
    in_channels: int = 1
    out_channels: int = 1


class Shift(nn.Module):
    """``x + 1``: a model whose errors are known by hand."""

    config_class = ShiftConfig

    def __init__(self, config: ShiftConfig):
        super().__init__()
        self.config = config
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x, t=None):
        return x[:, : self.config.out_channels] + 1.0


models.register("test-operator-shift", Shift)


def test_validation_median_over_batches_matches_hand_computation():
    # targets are constant fields a = 1, 2, 4, 8 and inputs x = a/2: persistence error |a/2 − a|/a = 50 %,
    # model error |a/2 + 1 − a|/a = 50, 0, 25, 37.5 % → median (25 + 37.5)/2 = 31.25 (torch.nanmedian: 25)
    a = torch.tensor([1.0, 2.0, 4.0, 8.0]).view(4, 1, 1, 1).expand(4, 1, 4, 4)
    batches = [{"x": a[i:i + 2] / 2, "y": a[i:i + 2].clone(), "mask": torch.ones(2, 1)} for i in (0, 2)]
    task = OperatorTask(model="test-operator-shift",
                        data_spec={"inputs": ["u"], "outputs": ["u"], "in_channels": 1, "out_channels": 1})
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    out = trainer.validate(task, dataloaders=DataLoader(batches, batch_size=None), verbose=False)[0]
    assert out["val/median_rel_l1"] == pytest.approx(31.25)
    assert out["val/median_rel_l1/u"] == pytest.approx(31.25)
    assert out["val/median_rel_l1_persistence"] == pytest.approx(50.0)
    # a second run starts from empty states (no samples carried over from the first)
    again = trainer.validate(task, dataloaders=DataLoader(batches[1:], batch_size=None), verbose=False)[0]
    assert again["val/median_rel_l1"] == pytest.approx((25 + 37.5) / 2)
