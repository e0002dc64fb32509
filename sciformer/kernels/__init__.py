"""Fused fast paths for the hot ops of the operator models, each with a pure-PyTorch reference.

The default paths live in ``sciformer.nn`` (SDPA-based); the functions here are what those modules call, and
they pick the implementation by device, availability and the mode set by ``SCIFORMER_KERNELS`` or
``use(...)`` (``reference`` | ``auto`` | ``compile``, see ``dispatch``). Benchmarks and the roofline table:
top-level ``kernels/``.
"""

from sciformer.kernels.cpu_memory import keep_freed_memory
from sciformer.kernels.dispatch import ENV, MODES, compiled_enabled, mode, use
from sciformer.kernels.layer_norm import time_conditioned_layer_norm

__all__ = ["ENV", "MODES", "compiled_enabled", "mode", "use", "time_conditioned_layer_norm", "keep_freed_memory"]
