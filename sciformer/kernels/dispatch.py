"""Which implementation of a fused op runs: one switch for all of ``sciformer.kernels``.

Modes (``SCIFORMER_KERNELS`` environment variable, or ``with sciformer.kernels.use(mode):``, which wins):

- ``reference``: every op runs its pure-PyTorch reference (the code path of ``sciformer.nn``). Use it to
  check a suspicious result, or to measure the "before" of a speed comparison.
- ``auto`` (default): fast paths that need no compilation and that won where measured (today: the two-pass
  instance norm on CPU; ``kernels/README.md`` has the measurements); the reference everywhere else.
- ``compile``: also the ``torch.compile``d fusions (Inductor: C++/OpenMP on CPU, Triton on CUDA) and, on
  CUDA, FlexAttention. The first call of each new shape compiles (seconds), so this is for training runs,
  not for tests or one-off predictions.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

from sciformer.errors import SciformerError

ENV = "SCIFORMER_KERNELS"
MODES = ("reference", "auto", "compile")
_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("sciformer_kernels", default=None)


def _check(value: str, where: str) -> str:
    if value not in MODES:
        raise SciformerError(f"{where}={value!r} is not a kernel mode; use one of {', '.join(MODES)}")
    return value


def mode() -> str:
    """The mode in force: the innermost ``use(...)``, else ``$SCIFORMER_KERNELS``, else ``auto``."""
    value = _override.get()
    if value is not None:
        return value
    return _check(os.environ.get(ENV, "auto").strip().lower() or "auto", ENV)


@contextlib.contextmanager
def use(value: str) -> Iterator[None]:
    """Run the block with kernel mode ``value`` (``reference``, ``auto`` or ``compile``)."""
    token = _override.set(_check(value, "sciformer.kernels.use"))
    try:
        yield
    finally:
        _override.reset(token)


def compiled_enabled() -> bool:
    """True when ``torch.compile``d fusions may run (mode ``compile``, and not already inside a compile)."""
    import torch

    # Inside an outer torch.compile the reference is traced and fused by that compile anyway (checked first:
    # dynamo cannot trace the ContextVar that ``mode`` reads).
    return not torch.compiler.is_compiling() and mode() == "compile"
