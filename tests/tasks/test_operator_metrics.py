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
from sciformer.models.spec import FamilySpec
from sciformer.tasks.operator import OperatorTask


@dataclass
class ShiftConfig:
    in_channels: int = 1
    out_channels: int = 1


class Shift(nn.Module):
    """``x + 1``: a model whose errors are known by hand."""

    config_class = ShiftConfig
    spec = FamilySpec(kind="operator")

    def __init__(self, config: ShiftConfig):
        super().__init__()
        self.config = config
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x, t=None):
        return x[:, : self.config.out_channels] + 1.0


models.register("test-operator-shift", Shift)


SPEC = {"inputs": ["u"], "outputs": ["u"], "in_channels": 1, "out_channels": 1}


def hand_samples() -> list[dict[str, torch.Tensor]]:
    """Targets are constant fields a = 1, 2, 4, 8 and inputs x = a/2: persistence error |a/2 − a|/a = 50 %,
    model error |a/2 + 1 − a|/a = 50, 0, 25, 37.5 % → median (25 + 37.5)/2 = 31.25 (torch.nanmedian: 25)."""
    return [{"x": torch.full((1, 4, 4), a / 2), "y": torch.full((1, 4, 4), a), "mask": torch.ones(1)}
            for a in (1.0, 2.0, 4.0, 8.0)]


def test_validation_median_over_batches_matches_hand_computation():
    samples = hand_samples()
    task = OperatorTask(model="test-operator-shift", data_spec=SPEC)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    out = trainer.validate(task, dataloaders=DataLoader(samples, batch_size=2), verbose=False)[0]
    assert out["val/median_rel_l1"] == pytest.approx(31.25)
    assert out["val/median_rel_l1/u"] == pytest.approx(31.25)
    assert out["val/median_rel_l1_persistence"] == pytest.approx(50.0)
    # a second run starts from empty states (no samples carried over from the first)
    again = trainer.validate(task, dataloaders=DataLoader(samples[2:], batch_size=2), verbose=False)[0]
    assert again["val/median_rel_l1"] == pytest.approx((25 + 37.5) / 2)


DDP_SCRIPT = """
import json, sys
import lightning as L
from torch.utils.data import DataLoader
sys.path.insert(0, sys.argv[2])
from test_operator_metrics import SPEC, hand_samples
from sciformer.tasks.operator import OperatorTask
from sciformer.models.spec import FamilySpec

if __name__ == "__main__":
    task = OperatorTask(model="test-operator-shift", data_spec=SPEC)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    out = trainer.validate(task, dataloaders=DataLoader(hand_samples(), batch_size=2), verbose=False)[0]
    if trainer.global_rank == 0:
        json.dump({k: float(v) for k, v in out.items()}, open(sys.argv[1], "w"))
"""


@pytest.mark.multiprocess
def test_ddp_median_gathers_every_ranks_samples(tmp_path):
    """Two gloo processes get two samples each (DistributedSampler: rank 0 has 50 and 25 %, rank 1 has 0 and
    37.5 %): the logged median is the median of all four (31.25), not rank 0's own (37.5)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "ddp_validate.py"
    script.write_text(DDP_SCRIPT)
    from conftest import ddp_env

    r = subprocess.run([sys.executable, str(script), str(tmp_path / "out.json"), str(Path(__file__).parent)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300, env=ddp_env())
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["val/median_rel_l1"] == pytest.approx(31.25)
    assert out["val/median_rel_l1_persistence"] == pytest.approx(50.0)
