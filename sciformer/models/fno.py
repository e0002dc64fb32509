"""Fourier Neural Operator baseline, from the `neuraloperator` package (optional extra `fno`).

A thin adapter to our operator interface ``model(x [B, C, *spatial], t [B] or None)``: the lead time enters
as one extra constant input channel (t = 1 for steady problems, as for the time-conditioned models), so FNO
can be trained on the same all2all pairs as scOT and serve as the fine-tuning sweep's second baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sciformer.errors import SciformerError
from sciformer.models.registry import register
from sciformer.models.spec import ChannelTensors, FamilySpec


@dataclass
class FNOConfig:
    in_channels: int = 4
    out_channels: int = 4
    spatial_dims: int = 2
    modes: int = 16            # Fourier modes kept per axis
    width: int = 64            # hidden channels
    n_layers: int = 4
    time_conditioning: bool = True  # append the lead time as a constant input channel


class FNO(nn.Module):
    config_class = FNOConfig
    # neuraloperator's parameter names; its channel MLPs are 1×1 Conv1d layers (weights [out, in, 1])
    spec = FamilySpec(
        kind="operator",
        sized_by_data=("in_channels", "out_channels"),
        # the lifting's inputs: the variables, then the lead time and neuraloperator's grid coordinates
        channels=(ChannelTensors("inputs", r"^fno\.lifting\.fcs\.0\.weight$", dims=(1,), extras=True),
                  ChannelTensors("outputs", r"^fno\.projection\.fcs\.1\.(weight|bias)$")),
        adapters=r"^fno\.(lifting|projection)\.",
        lora_targets=r"^fno\.fno_blocks\.(channel_mlp\.\d+\.fcs\.\d+|fno_skips\.\d+\.conv)$",
        lr_groups={"embedding_recovery": r"^fno\.(lifting|projection)\."},
        no_weight_decay=r"\.convs\.\d+\.bias$",
    )

    def __init__(self, config: FNOConfig):
        super().__init__()
        self.config = cfg = config
        try:
            from neuralop.models import FNO as _NeuralopFNO
        except ImportError:
            raise SciformerError("the FNO baseline needs the neuraloperator package: pip install 'sciformer[fno]'") \
                from None
        extra = 1 if cfg.time_conditioning else 0
        self.fno = _NeuralopFNO(n_modes=(cfg.modes,) * cfg.spatial_dims, hidden_channels=cfg.width,
                                in_channels=cfg.in_channels + extra, out_channels=cfg.out_channels,
                                n_layers=cfg.n_layers)

    def state_dict(self, *args, **kwargs):
        # neuraloperator adds its constructor arguments (functions, classes) under "_metadata": nothing of ours
        # needs them, and they would make every checkpoint unreadable with weights_only=True
        state = super().state_dict(*args, **kwargs)
        state.pop("_metadata", None)
        return state

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        if self.config.time_conditioning:
            lead = torch.ones(x.shape[0], device=x.device, dtype=x.dtype) if t is None else t.to(x.dtype)
            x = torch.cat([x, lead.view(-1, 1, *([1] * (x.ndim - 2))).expand(-1, 1, *x.shape[2:])], dim=1)
        return self.fno(x)


register("fno-2d", FNO, modes=16, width=64, n_layers=4)
register("fno-2d-tiny", FNO, modes=8, width=24, n_layers=4)
