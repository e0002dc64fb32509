"""Roofline rows for FactFormer's instance norm over the domain (forward + backward).

Minimal traffic when the field does not fit in cache: forward reads x twice (statistics, then normalise) and
writes y; backward reads x and dy twice (two reductions, then dx) and writes dx: 8·N·4 bytes.
Paths: ``reference`` (``torch.var_mean`` over the spatial axes), ``two_pass`` (mode auto on CPU), ``compiled``.

    python kernels/bench_instance_norm.py [--threads 1] [--device cpu] [--keep-freed-memory]
"""

from __future__ import annotations

import torch
from roofline import bench_paths, report, setup

from sciformer.kernels import instance_norm

CASES = {  # label: shape [B, *S, C] (C = heads · dim_head)
    "factformer-2d-tiny 64² B16": (16, 64, 64, 64),
    "factformer-3d-tiny 32³ B2": (2, 32, 32, 32, 64),
}


def main() -> None:
    a, c = setup(__doc__, reps=10)
    paths = {"reference": instance_norm.reference, "two_pass": instance_norm.two_pass,
             "compiled": instance_norm._compiled()}
    rows = []
    for label, shape in CASES.items():
        def inputs(shape=shape):
            return (torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(a.device).requires_grad_(),)

        n = torch.Size(shape).numel()
        rows += bench_paths(label, paths, inputs, flops=12 * n, nbytes=8 * n * 4, c=c, device=a.device, reps=a.reps)
    report("instance_norm" + ("_kept_memory" if a.keep_freed_memory else ""), rows, c, a.device)


if __name__ == "__main__":
    main()
