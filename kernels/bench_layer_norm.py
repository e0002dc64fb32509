"""Roofline rows for the time-conditioned LayerNorm + modulation (forward + backward).

Minimal traffic: forward reads x and writes y, backward reads x and dy and writes dx (rows of ≤ 128 floats
stay in L1 between the statistics and the normalisation): 5·N·4 bytes; FLOPs are negligible, so the op is
bandwidth-bound. Paths: ``reference`` (``F.layer_norm`` + ``addcmul``) and ``compiled`` (Inductor).

    python kernels/bench_layer_norm.py [--threads 1] [--device cpu] [--keep-freed-memory]
"""

from __future__ import annotations

import torch
from roofline import bench_paths, report, setup

from sciformer.kernels import layer_norm

CASES = {  # label: shape [B, *tokens, C]
    "factformer-2d-tiny 64² B16": (16, 64, 64, 32),
    "scot-t stage1 32² B4": (4, 32, 32, 48),
    "factformer-2d 128² B4": (4, 128, 128, 128),
}


def main() -> None:
    a, c = setup(__doc__, reps=10)
    paths = {"reference": layer_norm.reference, "compiled": layer_norm._compiled()}
    rows = []
    for label, shape in CASES.items():
        def inputs(shape=shape):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(shape, generator=g).to(a.device).requires_grad_()
            params = [torch.randn(shape[-1], generator=g).to(a.device).requires_grad_() for _ in range(4)]
            return (x, torch.rand(shape[0], generator=g).to(a.device), *params, 1e-5)

        n = torch.Size(shape).numel()
        rows += bench_paths(label, paths, inputs, flops=17 * n, nbytes=5 * n * 4, c=c, device=a.device, reps=a.reps)
    report("layer_norm" + ("_kept_memory" if a.keep_freed_memory else ""), rows, c, a.device)


if __name__ == "__main__":
    main()
