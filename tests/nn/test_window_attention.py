"""SwinV2 window attention against a float64 per-token reference that never pads, rolls or partitions.

The reference decides for every (query, key) pair directly from their grid positions whether they share a
(shifted) window and shift region, and evaluates the position-bias MLP on the pair's own log-spaced offset.
"""

import math

import pytest
import torch

from sciformer.kernels.window_attention import _ScaledUnit
from sciformer.kernels.window_attention import reference as cosine_window_attention
from sciformer.nn.window_attention import (
    SwinV2Block,
    WindowAttention,
    attention_mask,
    attention_tables,
    relative_coordinates,
    window_geometry,
)


def _randomise(attn: WindowAttention, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        attn.logit_scale.copy_(torch.linspace(0.5, 3.0, attn.heads).view(-1, 1, 1))


def _axis(n: int, window: int, shifted: bool):
    """Rolled position, window id and shift region of each of the n real tokens along one axis."""
    win = min(window, n)
    shift = win // 2 if shifted and n > win else 0
    n_pad = math.ceil(n / win) * win
    r = [(p - shift) % n_pad for p in range(n)]
    region = [0 if q < n_pad - win else (1 if q < n_pad - shift else 2) for q in r]
    return win, r, [q // win for q in r], region


def reference_attention(attn: WindowAttention, x: torch.Tensor, window: int, shifted: bool) -> torch.Tensor:
    """Attention branch in float64, one query at a time over the keys it may see."""
    attn = attn.double()
    b, h, w, c = x.shape
    heads, d = attn.heads, c // attn.heads
    x = x.double().reshape(b, h * w, c)
    wq, wk, wv = attn.qkv.weight.double().chunk(3)
    q = x @ wq.T + attn.q_bias.double()
    k = x @ wk.T
    v = x @ wv.T + attn.v_bias.double()
    win_h, rh, idh, regh = _axis(h, window, shifted)
    win_w, rw, idw, regw = _axis(w, window, shifted)
    pos = [(i, j) for i in range(h) for j in range(w)]
    scale = torch.clamp(attn.logit_scale.double(), max=math.log(100)).exp().view(heads)

    def coord(delta, win):
        c = 8.0 * delta / (win - 1) if win > 1 else 0.0
        return math.copysign(math.log2(abs(c) + 1) / 3.0, c) if c else 0.0

    out = torch.zeros(b, h * w, heads, d, dtype=torch.float64)
    for a, (i, j) in enumerate(pos):
        keys = [e for e, (i2, j2) in enumerate(pos)
                if idh[i2] == idh[i] and idw[j2] == idw[j] and regh[i2] == regh[i] and regw[j2] == regw[j]]
        offs = torch.tensor([[coord(rh[i] - rh[pos[e][0]], win_h), coord(rw[j] - rw[pos[e][1]], win_w)]
                             for e in keys], dtype=torch.float64)
        bias = 16 * torch.sigmoid(attn.cpb_mlp(offs))  # [K, heads]
        qa = torch.nn.functional.normalize(q[:, a].view(b, heads, d), dim=-1)
        kk = torch.nn.functional.normalize(k[:, keys].view(b, len(keys), heads, d), dim=-1)
        s = torch.einsum("bhd,bkhd->bhk", qa, kk) * scale[None, :, None] + bias.T[None]
        p = torch.softmax(s, dim=-1)
        out[:, a] = torch.einsum("bhk,bkhd->bhd", p, v[:, keys].view(b, len(keys), heads, d))
    out = out.reshape(b, h * w, c) @ attn.proj.weight.double().T + attn.proj.bias.double()
    return out.view(b, h, w, c)


CASES = [  # (h, w, window, shifted): square, shifted, padded, rectangular, global window, odd sizes
    (8, 8, 4, False),
    (8, 8, 4, True),
    (6, 10, 4, True),
    (5, 7, 8, False),
    (3, 9, 4, True),
    (7, 5, 3, True),
]


@pytest.mark.parametrize("h,w,window,shifted", CASES)
def test_sdpa_path_matches_float64_reference(h, w, window, shifted):
    torch.manual_seed(0)
    block = SwinV2Block(dim=12, heads=3, window=window, shifted=shifted).double()
    _randomise(block.attn)
    x = torch.randn(2, h, w, 12, dtype=torch.float64)
    ref = reference_attention(block.attn, x, window, shifted)
    torch.testing.assert_close(block.attention(x), ref, rtol=1e-9, atol=1e-9)
    # float32 through the same path
    got32 = block.float().attention(x.float())
    torch.testing.assert_close(got32.double(), ref, rtol=2e-4, atol=2e-4)


def test_shift_only_along_axes_longer_than_the_window():
    assert window_geometry(32, 32, 16, True) == (16, 16, 8, 8)
    assert window_geometry(16, 40, 16, True) == (16, 16, 0, 8)   # one window along h: no shift there
    assert window_geometry(8, 8, 16, True) == (8, 8, 0, 0)        # global window
    assert window_geometry(32, 32, 16, False) == (16, 16, 0, 0)


def test_masks_and_coordinates_are_cached_and_exact():
    cpu = torch.device("cpu")
    m1 = attention_mask(6, 10, 4, 4, 2, 2, cpu)
    assert m1 is attention_mask(6, 10, 4, 4, 2, 2, cpu)  # cache hit: built once per geometry
    assert attention_mask(8, 8, 8, 8, 0, 0, cpu) is None  # one unshifted, unpadded window: no mask at all
    assert m1.shape == (2 * 3, 16, 16)
    table = relative_coordinates(3, 3, cpu)
    assert table.shape == (5, 5, 2)
    # offset (+2, 0) at window 3: c = 8·2/2 = 8 -> log2(9)/3; offset (−1, 0): c = −4 -> −log2(5)/3; 0 -> 0
    assert table[2 + 2, 0 + 2].tolist() == pytest.approx([math.log2(9) / 3, 0.0])
    assert table[-1 + 2, 0 + 2].tolist() == pytest.approx([-math.log2(5) / 3, 0.0])
    assert table[2, 2].tolist() == [0.0, 0.0]


def test_cpu_training_path_equals_sdpa():
    """The explicit path used for CPU training (learned bias needs a gradient) is the same function as SDPA."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 2, 16, 4, dtype=torch.float64) for _ in range(3))
    scale = torch.rand(2, 1, 1, dtype=torch.float64) * 5
    bias = torch.randn(2, 16, 16, dtype=torch.float64, requires_grad=True)
    mask = attention_mask(8, 6, 4, 4, 2, 0, torch.device("cpu")).double()  # 4 windows, shift + padded keys
    explicit = cosine_window_attention(q, k, v, scale, bias, mask)  # grad enabled + learned bias: explicit path
    with torch.no_grad():
        sdpa = cosine_window_attention(q, k, v, scale, bias, mask)
    torch.testing.assert_close(explicit.detach(), sdpa, rtol=1e-12, atol=1e-12)
    (g,) = torch.autograd.grad(explicit.square().sum(), bias)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_padded_keys_get_no_weight_and_padded_grid_gradients_are_finite():
    torch.manual_seed(1)
    block = SwinV2Block(dim=8, heads=2, window=4, shifted=True)
    x = torch.randn(1, 5, 6, 8, requires_grad=True)
    y = block(x, torch.tensor([0.3]))
    y.square().sum().backward()
    assert y.shape == x.shape and torch.isfinite(x.grad).all()
    # a real token's output does not depend on any other token outside its window: perturb a far token
    x2 = x.detach().clone()
    x2[0, 4, 5] += 10.0
    with torch.no_grad():
        y1, y2 = block.attention(x.detach()), block.attention(x2)
    _, r_h, id_h, reg_h = _axis(5, 4, True)
    _, r_w, id_w, reg_w = _axis(6, 4, True)
    same = [(i, j) for i in range(5) for j in range(6)
            if (id_h[i], id_w[j], reg_h[i], reg_w[j]) == (id_h[4], id_w[5], reg_h[4], reg_w[5])]
    for i in range(5):
        for j in range(6):
            changed = not torch.allclose(y1[0, i, j], y2[0, i, j])
            assert changed == ((i, j) in same), (i, j)


@pytest.mark.parametrize("scaled", [True, False])
def test_scaled_unit_equals_the_autograd_formula(scaled):
    """The hand-written normalisation (q and k in ``cosine_window_attention``) gives the values and gradients of
    x·s·rsqrt(max(|x|², 1e-24)) under autograd, float64, including a zero row and a row below the clamp."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 6, 5, dtype=torch.float64, generator=g)
    x[0, 0, 0, 0] = 0.0
    x[0, 0, 0, 1] = 1e-13
    x = x.permute(0, 1, 3, 2, 4).requires_grad_()  # strided, as the q/k views of the fused projection
    s = (torch.rand(6, 1, 1, dtype=torch.float64, generator=g) * 5 + 1).requires_grad_() if scaled else None
    cot = torch.randn(2, 3, 6, 4, 5, dtype=torch.float64, generator=g)
    leaves = [x] + ([s] if scaled else [])

    r = torch.rsqrt(x.square().sum(-1, keepdim=True).clamp_min(1e-24))
    ref = x * (r * s) if scaled else x * r
    got = _ScaledUnit.apply(x, s)
    assert got.is_contiguous()
    torch.testing.assert_close(got, ref, rtol=1e-14, atol=0)
    for a, b in zip(torch.autograd.grad(got, leaves, cot), torch.autograd.grad(ref, leaves, cot)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * b.abs().max().item())
    regular = [x.detach()[1:].requires_grad_()] + leaves[1:]  # finite differences: away from the clamp
    assert torch.autograd.gradcheck(lambda x, *s: _ScaledUnit.apply(x, s[0] if s else None), tuple(regular))


def test_batched_attention_tables_equal_each_layers_own():
    """A stage's batched position-bias MLP gives every layer the scale and bias of its own MLP (float64)."""
    torch.manual_seed(0)
    layers = [WindowAttention(dim=12, heads=3).double() for _ in range(3)]
    for i, a in enumerate(layers):
        _randomise(a, seed=i)
        a.logit_scale.data[0] = 6.0  # above log 100: clamped
    tables = attention_tables(layers, 4, 3, torch.device("cpu"))
    for a, (scale, bias) in zip(layers, tables):
        t = 16 * torch.sigmoid(a.cpb_mlp(relative_coordinates(4, 3, torch.device("cpu"))))  # [7, 5, heads]
        expected = torch.stack([t[i // 3 - j // 3 + 3, i % 3 - j % 3 + 2] for i in range(12) for j in range(12)])
        torch.testing.assert_close(bias, expected.T.reshape(3, 12, 12), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(scale, a.logit_scale.clamp(max=math.log(100)).exp(), rtol=0, atol=0)
    assert attention_tables(layers[:1], 4, 3, torch.device("cpu"))[0][1].shape == (3, 12, 12)
