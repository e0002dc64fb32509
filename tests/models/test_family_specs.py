"""Every registered family declares a spec whose patterns name real parameters of its smallest size."""

from __future__ import annotations

import re

import pytest
from torch import nn

from sciformer import models
from sciformer.models.spec import KINDS, ChannelTensors, FamilySpec

# one small size per family (graph models need torch-geometric, FNO neuraloperator)
SMALL = {"ScOT": "scot-tiny", "FactFormer": "factformer-2d-tiny", "FNO": "fno-2d-tiny", "ITransformer": "itransformer-tiny",
         "AllAtomAutoencoder": "adit-vae-tiny", "LatentDiT": "adit-dit-tiny", "GraphTransformer": "graph-gps-tiny"}


def test_every_registered_class_has_a_small_size_here():
    library = [models.model_class(n) for n in models.names()]  # other tests register families of their own
    classes = {c.__name__ for c in library if c.__module__.startswith("sciformer.")}
    assert classes <= set(SMALL)


@pytest.mark.parametrize("cls_name", list(SMALL))
def test_spec_patterns_name_real_parameters(cls_name):
    if cls_name == "GraphTransformer":
        pytest.importorskip("torch_geometric")
    if cls_name == "FNO":
        pytest.importorskip("neuralop")
    model = models.get(SMALL[cls_name])
    spec = models.spec(model)
    assert spec.kind in KINDS
    params = [n for n, _ in model.named_parameters()]
    adapters = [n for n in params if spec.is_adapter(n)]
    assert adapters and len(adapters) < len(params)  # frozen-latent trains something, and not everything
    lora = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d)) and re.search(spec.lora_targets, n)]
    assert lora, "LoRA targets match no layer"
    assert not any(spec.is_adapter(f"{n}.weight") for n in lora)  # LoRA would freeze an adapter's base weight
    for group, pattern in spec.lr_groups.items():
        assert any(re.search(pattern, n) for n in params), f"LR group {group} matches nothing"
    for decl in spec.channels:
        assert any(re.search(decl.pattern, n) for n in params), f"channel tensor {decl.pattern} matches nothing"
    if spec.time_conditioning != FamilySpec.time_conditioning:
        assert any(spec.is_time_conditioning(n) for n in params)


def test_a_class_without_a_spec_cannot_be_registered():
    class NoSpec(nn.Module):
        config_class = dict

    with pytest.raises(TypeError, match="declares no FamilySpec"):
        models.register("nospec-test", NoSpec)


def test_spec_rejects_an_unknown_kind_and_a_bad_pattern():
    with pytest.raises(ValueError, match="kind"):
        FamilySpec(kind="images")
    with pytest.raises(re.error):
        FamilySpec(kind="operator", channels=(ChannelTensors("inputs", "("),))


def test_lr_groups_of_factformer_reach_its_embedding_and_head():
    """The bug this contract fixed: FactFormer's embed./head2. matched no hard-coded prefix."""
    from sciformer.tasks.operator import OperatorTask

    task = OperatorTask(model="factformer-2d-tiny", lr=1e-4, lr_embedding_recovery=1e-3, lr_time_embedding=2e-3,
                        data_spec={"in_channels": 2, "out_channels": 2})
    lr = {id(p): g["lr"] for g in task.param_groups() for p in g["params"]}
    named = dict(task.model.named_parameters())
    assert {lr[id(named[n])] for n in ("embed.weight", "head1.weight", "head2.weight", "head2.bias")} == {1e-3}
    assert lr[id(named["blocks.0.norm.weight_t"])] == 2e-3
    assert lr[id(named["blocks.0.attn.to_v.weight"])] == 1e-4


OLD_NO_DECAY = r"(?i)(norm|embed|pos_|position|bias|gamma|beta|logit_scale|cpb)"  # the name list the spec replaced


@pytest.mark.parametrize("name, options", [(n, {}) for n in SMALL.values()] + [("adit-dit-tiny", {"num_properties": 2}),
                                                                             ("ifactformer-m-2d-tiny", {})])
def test_weight_decay_split_is_unchanged_by_the_spec(name, options):
    """Each family's no_weight_decay reproduces exactly what the old shared name list decided for it."""
    if name.startswith("graph"):
        pytest.importorskip("torch_geometric")
    if name.startswith("fno"):
        pytest.importorskip("neuralop")
    model = models.get(name, **options)
    spec = models.spec(model)
    for n, p in model.named_parameters():
        assert spec.takes_weight_decay(n, p.ndim) == (p.ndim >= 2 and not re.search(OLD_NO_DECAY, n)), n
