"""Roofline rows for scOT's scaled-cosine window attention with position bias and shift/padding masks
(forward + backward), at scOT-T's stage shapes (batch 4, 128² input, 4×4 patches, window 16).

FLOPs: ``QKᵀ`` and ``PV`` forward ``4·B·nW·h·N²·d``, backward twice that. Minimal traffic (scores never
leave cache, as a flash-style kernel): q, k, v, out and their gradients plus the ``[h, N, N]`` bias and its
gradient. The reference on CPU materialises the ``[B, nW, h, N, N]`` scores (several passes over them),
so it sits far from this floor. Paths: ``reference`` (``sciformer.kernels.window_attention.reference``) and ``compiled``
(Inductor). FlexAttention is CUDA-only (no CPU backward) and is not timed here.

    python kernels/bench_window_attention.py [--threads 1] [--device cpu] [--keep-freed-memory]
"""

from __future__ import annotations

import torch
from roofline import bench_paths, report, setup

from sciformer.kernels import window_attention as wa
from sciformer.nn.window_attention import attention_mask

CASES = {  # label: (B, tokens per side, window, heads, d, shifted)
    "scot-t stage1 32² shifted": (4, 32, 16, 3, 16, True),
    "scot-t stage2 16²": (4, 16, 16, 6, 16, False),
    "scot-t stage3 8²": (4, 8, 8, 12, 16, False),
}


def main() -> None:
    a, c = setup(__doc__, reps=10)
    dev = torch.device(a.device)
    paths = {"reference": wa.reference, "compiled": wa._compiled("flex" if wa.flex_available(dev, 16) else "reference")}
    rows = []
    for label, (b, side, win, h, d, shifted) in CASES.items():
        nw, n = (side // win) ** 2, win * win
        mask = attention_mask(side, side, win, win, win // 2 if shifted else 0, win // 2 if shifted else 0, dev)

        def inputs(b=b, nw=nw, h=h, n=n, d=d, mask=mask):
            g = torch.Generator().manual_seed(0)
            q, k, v = (torch.randn(b, nw, h, n, d, generator=g).to(dev).requires_grad_() for _ in range(3))
            scale = torch.full((h, 1, 1), 10.0).to(dev).requires_grad_()
            bias = (16 * torch.rand(h, n, n, generator=g)).to(dev).requires_grad_()
            return (q, k, v, scale, bias, mask)

        flops = 3 * 4 * b * nw * h * n * n * d
        nbytes = (8 * b * nw * h * n * d + 2 * h * n * n) * 4
        rows += bench_paths(label, paths, inputs, flops, nbytes, c, a.device, a.reps)
    report("window_attention" + ("_kept_memory" if a.keep_freed_memory else ""), rows, c, a.device)


if __name__ == "__main__":
    main()
