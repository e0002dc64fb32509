"""Float32 linear layers on CPU through oneDNN instead of MKL: the same product, about twice as fast on AMD.

ATen sends CPU float32 ``matmul``/``linear`` to MKL's sgemm, which runs its AVX2 code on non-Intel CPUs; oneDNN
(bundled with PyTorch) uses AVX-512 where the CPU has it. On this machine kind (AMD EPYC, 2 threads) a
[352, 256] × [256, 256] product takes 230 µs with MKL and 130 µs with oneDNN, and the same holds for the two
backward products. Both are plain float32 (no reduced-precision accumulation); results differ only by summation
order (~1e-6 relative). ``linear`` takes the oneDNN path in modes ``auto``/``compile`` for CPU float32 tensors
outside autocast and compilation on CPUs with AVX-512, and ``F.linear`` otherwise (mode ``reference``, CUDA, other
dtypes, AVX2-only CPUs). On an AVX2-only AMD EPYC (2 threads) both libraries run AVX2 code: the forward and
input-gradient products tie (~470 µs for 4096×192×48), and MKL's weight gradient, which reads the transposed
operands in place, is 1.4–4× faster than oneDNN's (530 vs 2,090 µs); the scOT-T training step took 0.59–0.61 s
with MKL against 0.67–0.84 s with oneDNN there (alternating runs, 2026-12-02).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from sciformer.kernels.dispatch import mode


def _mm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ w.T + b`` with oneDNN (``w`` [out, in]; strided views are fine)."""
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """``F.linear`` with the forward and both backward products done by oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _mm(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _mm(g, weight.t())
        g2 = g.reshape(-1, g.shape[-1])
        if ctx.needs_input_grad[1]:
            gw = _mm(g2.t(), x.reshape(-1, x.shape[-1]).t())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0)
        return gx, gw, gb


@functools.cache
def _onednn_works() -> bool:
    """The op is internal to PyTorch: use it only if this build has it and it computes ``F.linear``."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        # a generator of its own: the first call happens inside a training step, and a draw from the global RNG
        # there would shift every later dropout mask of a run resumed from a checkpoint (whose RNG state is
        # restored before that first call), but not of the uninterrupted run
        g = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(*shape, generator=g) for shape in ((3, 5), (4, 5), (4,)))
        return torch.allclose(_mm(x, w, b), F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    except (RuntimeError, AttributeError, TypeError):
        return False


@functools.cache
def _avx512() -> bool:
    """oneDNN's gain is its AVX-512 code; on AVX2-only CPUs MKL is as fast or faster (module docstring)."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    # not while exporting (ONNX/TorchScript tracing must record F.linear) or compiling (Inductor picks itself)
    return (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and x.ndim >= 2
            and mode() != "reference" and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling() and not torch.compiler.is_exporting()
            and not torch.jit.is_tracing()
            and not torch.onnx.is_in_onnx_export() and _avx512() and _onednn_works())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN on CPU float32 (see the module docstring)."""
    if _use_onednn(x, weight):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) whose product goes through :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
