import pytest
import torch

pytest.importorskip("neuralop")

from neuralop.models import FNO as NeuralopFNO  # noqa: E402

from sciformer import models  # noqa: E402


def test_fno_adapter_is_neuralop_fno_with_a_lead_time_channel():
    m = models.get("fno-2d-tiny", in_channels=3, out_channels=2)
    ref = NeuralopFNO(n_modes=(8, 8), hidden_channels=24, in_channels=4, out_channels=2, n_layers=4)
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in ref.parameters())
    ref.load_state_dict(m.fno.state_dict())
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0.25, 0.75])
    expected = ref(torch.cat([x, t.view(2, 1, 1, 1).expand(2, 1, 16, 16)], 1))
    torch.testing.assert_close(m(x, t), expected)
    # steady problems: t = None means t = 1, and the lead time changes the output
    torch.testing.assert_close(m(x, None), m(x, torch.ones(2)))
    assert not torch.allclose(m(x, t), m(x, torch.zeros(2)))
