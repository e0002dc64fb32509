"""Channel adaptation by variable name: copied, copied-by-channel, re-initialised, never silently wrong."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from sciformer import models
from sciformer.adaptation import adapt, merged_stats
from sciformer.checkpoints import Checkpoint
from sciformer.errors import CheckpointError
from sciformer.models.spec import ChannelTensors, FamilySpec


@dataclass
class TinyOpConfig:
    in_channels: int = 2
    out_channels: int = 2
    width: int = 8


class TinyOp(nn.Module):
    """Embedding conv -> latent linear -> recovery conv + output mixing, named like scOT's parts."""

    config_class = TinyOpConfig
    spec = FamilySpec(
        kind="operator",
        sized_by_data=("in_channels", "out_channels"),
        channels=(ChannelTensors("inputs", r"^embeddings\.proj\.weight$", dims=(1,)),
                  ChannelTensors("outputs", r"^patch_recovery\.projection\.weight$", dims=(1,)),
                  ChannelTensors("outputs", r"^patch_recovery\.projection\.bias$"),
                  ChannelTensors("outputs", r"^patch_recovery\.mixup\.weight$", dims=(0, 1))),
        adapters=r"^(embeddings|patch_recovery)\.",
        lora_targets=r"^latent\.mlp$",
    )

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embeddings = nn.ModuleDict({"proj": nn.Conv2d(config.in_channels, config.width, 3, padding=1)})
        self.latent = nn.ModuleDict({"mlp": nn.Linear(config.width, config.width)})
        self.patch_recovery = nn.ModuleDict({
            "projection": nn.ConvTranspose2d(config.width, config.out_channels, 1),
            "mixup": nn.Conv2d(config.out_channels, config.out_channels, 3, padding=1, bias=False),
        })

    def forward(self, x, t=None):
        h = self.embeddings["proj"](x)
        h = self.latent["mlp"](h.movedim(1, -1)).movedim(-1, 1)
        return self.patch_recovery["mixup"](self.patch_recovery["projection"](h))


models.register("tiny-op-test", TinyOp)


def pretrained(inputs, outputs):
    torch.manual_seed(0)
    m = TinyOp(TinyOpConfig(len(inputs), len(outputs)))
    spec = {"inputs": inputs, "outputs": outputs, "spatial_shape": [8, 8], "stats": {v: {"mean": 1.0, "std": 2.0} for v in inputs}}
    return m, Checkpoint("mem", "export", "TinyOp", {"in_channels": len(inputs), "out_channels": len(outputs),
                                                     "width": 8}, m.state_dict(), spec)


def test_same_variables_copy_everything_and_compute_the_same_function():
    m, pre = pretrained(["u", "v"], ["u", "v"])
    new, report = adapt(pre, {"inputs": ["u", "v"], "outputs": ["u", "v"]}, in_channels=2, out_channels=2)
    assert not report["reinitialised"] and not report["copied_by_channel"]
    x = torch.randn(2, 2, 8, 8)
    torch.testing.assert_close(new(x), m(x))


def test_new_and_reordered_variables_are_matched_by_name():
    m, pre = pretrained(["rho", "u", "v", "p"], ["rho", "u", "v", "p"])
    target = {"inputs": ["v", "u", "c"], "outputs": ["v", "u"]}
    new, report = adapt(pre, target, in_channels=3, out_channels=2)
    w_old, w_new = m.embeddings["proj"].weight, new.embeddings["proj"].weight
    torch.testing.assert_close(w_new[:, 0], w_old[:, 2])  # v
    torch.testing.assert_close(w_new[:, 1], w_old[:, 1])  # u
    assert not torch.allclose(w_new[:, 2], w_old[:, 0])  # c is new: fresh init, not rho's slice
    mix_old, mix_new = m.patch_recovery["mixup"].weight, new.patch_recovery["mixup"].weight
    torch.testing.assert_close(mix_new[0, 1], mix_old[2, 1])  # (v <- u) entry
    assert "embeddings.proj.bias" in report["copied"]  # not channel-dependent
    assert "latent.mlp.weight" in report["copied"]
    assert set(report["copied_by_channel"]) >= {"embeddings.proj.weight", "patch_recovery.mixup.weight"}


def test_same_count_different_names_is_not_copied_blindly():
    m, pre = pretrained(["u", "v"], ["u", "v"])
    new, report = adapt(pre, {"inputs": ["a", "b"], "outputs": ["a", "b"]}, in_channels=2, out_channels=2)
    assert "embeddings.proj.weight" in report["reinitialised"]
    assert not torch.equal(new.embeddings["proj"].weight, m.embeddings["proj"].weight)


def test_modes_freeze_the_latent():
    _, pre = pretrained(["u"], ["u"])
    target = {"inputs": ["u"], "outputs": ["u"]}
    frozen, _ = adapt(pre, target, mode="frozen-latent", in_channels=1, out_channels=1)
    assert {n for n, p in frozen.named_parameters() if p.requires_grad} == {
        "embeddings.proj.weight", "embeddings.proj.bias", "patch_recovery.projection.weight",
        "patch_recovery.projection.bias", "patch_recovery.mixup.weight"}
    lora, report = adapt(pre, target, mode="lora", lora_rank=2, in_channels=1, out_channels=1)
    assert report["lora"] == ["latent.mlp"]
    assert {"latent.mlp.lora_a", "latent.mlp.lora_b"} <= {n for n, p in lora.named_parameters() if p.requires_grad}
    assert not lora.latent["mlp"].base.weight.requires_grad


def test_dimensionality_mismatch_is_a_clear_error():
    _, pre = pretrained(["u"], ["u"])
    with pytest.raises(CheckpointError, match="2D grids.*3D"):
        adapt(pre, {"inputs": ["u"], "outputs": ["u"], "spatial_shape": [8, 8, 8]})


def test_statistics_travel_with_the_checkpoint():
    _, pre = pretrained(["u", "v"], ["u", "v"])
    stats = merged_stats(pre.data_spec, {"u": {"mean": 0.0, "std": 1.0}, "c": {"mean": 3.0, "std": 4.0}})
    assert stats == {"u": {"mean": 1.0, "std": 2.0}, "c": {"mean": 3.0, "std": 4.0}}


def test_gains_match_hand_computation():
    import math

    from sciformer.finetune import accuracy_gain, efficiency_gain

    assert accuracy_gain(10.0, 4.0) == 2.5
    # model: eps(8)=8, eps(32)=2 -> log-log line eps = 8 * (s/8)^-1 ; baseline at S=32 has eps 4 -> s = 16
    value, text = efficiency_gain([8, 32], [8.0, 2.0], eps_target=4.0, S=32)
    assert value == pytest.approx(2.0) and text == "2"
    value, text = efficiency_gain([8, 32], [3.0, 2.0], eps_target=4.0, S=32)
    assert value == pytest.approx(4.0) and text == "> 4"
    value, text = efficiency_gain([8, 32], [9.0, 5.0], eps_target=4.0, S=32)
    assert math.isnan(value) and "not reached" in text
