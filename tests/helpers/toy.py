"""A linear-regression task and data module for CLI plumbing tests (tests only; not part of the library)."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import TensorDataset

from sciformer import models
from sciformer.data.loader import ResumableLoader
from sciformer.data.module import DataModule
from sciformer.models.spec import FamilySpec
from sciformer.tasks.base import BaseTask


@dataclass
class ToyConfig:
    in_features: int = 8
    out_features: int = 1
    hidden: int = 16
    dropout: float = 0.1


class ToyNet(nn.Module):
    config_class = ToyConfig
    spec = FamilySpec(kind="property", adapters=r"^net\.3\.", lora_targets=r"^net\.0$")

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        self.net = nn.Sequential(
            nn.Linear(config.in_features, config.hidden), nn.GELU(), nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.out_features),
        )

    def forward(self, x):
        return self.net(x)


models.register("toy-net", ToyNet)


class ToyTask(BaseTask):
    def model_overrides(self):
        spec = self.hparams.data_spec or {}
        return {"in_features": spec["features"]} if "features" in spec else {}

    def step(self, batch, stage):
        x, y = batch
        loss = nn.functional.mse_loss(self.model(x), y)
        self.log(f"{stage}/loss", loss, prog_bar=True)
        return loss


class ToyData(DataModule):
    def __init__(self, n: int = 256, features: int = 8, batch_size: int = 16, seed: int = 0, num_workers: int = 0):
        super().__init__()
        self.save_hyperparameters()
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, features, generator=g)
        w = torch.randn(features, 1, generator=g)
        self.y = self.x @ w + 0.01 * torch.randn(n, 1, generator=g)

    @property
    def spec(self):
        return {"features": self.hparams.features}

    def train_dataloader(self):
        hp = self.hparams
        return ResumableLoader(TensorDataset(self.x, self.y), hp.batch_size, shuffle=True, seed=hp.seed,
                               num_workers=hp.num_workers)

    def val_dataloader(self):
        return ResumableLoader(TensorDataset(self.x[:64], self.y[:64]), 32)


class KillAt(Callback):
    """SIGKILLs its own process after optimizer step ``step``: a crash, not a clean exit."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class AllocatorProbe(Callback):
    """After training, frees a fresh 64 MiB tensor and writes how many bytes went back to the OS to ``path``
    (glibc's default returns the whole block; a process that keeps freed memory returns none)."""

    def __init__(self, path: str):
        self.path = path

    def on_train_end(self, trainer, pl_module):
        def resident():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

        y = torch.ones(16 * 2**20)
        held = resident()
        del y
        with open(self.path, "w") as f:
            f.write(str(held - resident()))


models.register("toy-net-wide", ToyNet, hidden=32)
