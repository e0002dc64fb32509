import torch
from torch import nn

from sciformer.nn.lora import LoRALinear, apply_lora


def test_lora_starts_as_identity_update_and_merges_exactly():
    torch.manual_seed(0)
    base = nn.Linear(6, 5).double()
    lora = LoRALinear(base, rank=2, alpha=4.0)
    x = torch.randn(3, 6, dtype=torch.float64)
    torch.testing.assert_close(lora(x), base(x))  # B = 0 at init
    with torch.no_grad():
        lora.lora_b.normal_()
    expected = base(x) + 2.0 * x @ lora.lora_a.T @ lora.lora_b.T
    torch.testing.assert_close(lora(x), expected)
    torch.testing.assert_close(lora.merged()(x), expected)


def test_apply_lora_freezes_base_and_targets_by_name():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    names = apply_lora(model, r"^2$", rank=1)
    assert names == ["2"]
    assert isinstance(model[2], LoRALinear) and isinstance(model[0], nn.Linear)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"0.weight", "0.bias", "2.lora_a", "2.lora_b"}
