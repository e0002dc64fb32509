"""Roofline rows for the factorized axial kernel application (FactFormer's chained ``K_z ×_z K_y ×_y K_x ×_x V``).

FLOPs: forward ``2·B·h·N·(Σ_a n_a)·d``, backward twice that (gradients of V and of every K_a). Traffic: each
axis reads and writes V once forward and about twice backward: ``6·D·(B·h·N·d)·4`` bytes for D axes. With
``n_a`` ≥ 32 the arithmetic intensity (``n_a/4`` FLOP/byte) is above the ridge point, so the floor is compute.
Paths: ``reference`` (``sciformer.nn.factorized_attention``: one ``einsum`` per axis, a batched matmul with the
other axes folded into the columns), ``matmul`` (first axis as a plain ``bmm`` on ``[n_1, rest]``, the others
as broadcast matmuls — no permute copies) and ``compiled`` (the reference chain through Inductor). Only the
reference is in the library: neither alternative won on CPU (see ``kernels/README.md``).

    python kernels/bench_axial.py [--threads 1] [--device cpu] [--keep-freed-memory]
"""

from __future__ import annotations

import math

import torch
from roofline import bench_paths, report, setup

from sciformer.nn.factorized_attention import apply_along_axis

CASES = {  # label: V shape [B, h, *S, d]
    "factformer-2d-tiny 64² B16": (16, 4, 64, 64, 16),
    "factformer-2d 128² B4": (4, 8, 128, 128, 64),
    "factformer-3d-tiny 32³ B2": (2, 4, 32, 32, 32, 16),
}


def reference(v, *kernels):
    for a, k in enumerate(kernels):
        v = apply_along_axis(k, v, a)
    return v


def matmul(v, *kernels):
    b, h, spatial, d = v.shape[0], v.shape[1], v.shape[2:-1], v.shape[-1]
    for a, k in enumerate(kernels):
        rest = math.prod(spatial[a + 1:]) * d
        vv = v.reshape(b, h, math.prod(spatial[:a]), spatial[a], rest)
        v = (k.unsqueeze(2) @ vv).view(v.shape) if a else (k @ vv.squeeze(2)).view(v.shape)
    return v


def main() -> None:
    a, c = setup(__doc__, reps=6)
    paths = {"reference": reference, "matmul": matmul, "compiled": torch.compile(reference)}
    rows = []
    for label, shape in CASES.items():
        b, h, spatial, d = shape[0], shape[1], shape[2:-1], shape[-1]

        def inputs(shape=shape, b=b, h=h, spatial=spatial):
            g = torch.Generator().manual_seed(0)
            v = torch.randn(shape, generator=g).to(a.device).requires_grad_()
            ks = [(torch.randn(b, h, n, n, generator=g) / n).to(a.device).requires_grad_() for n in spatial]
            return (v, *ks)

        n = math.prod(spatial)
        flops = 3 * 2 * b * h * n * sum(spatial) * d
        nbytes = 6 * len(spatial) * b * h * n * d * 4
        rows += bench_paths(label, paths, inputs, flops, nbytes, c, a.device, a.reps)
    report("axial" + ("_kept_memory" if a.keep_freed_memory else ""), rows, c, a.device)


if __name__ == "__main__":
    main()
