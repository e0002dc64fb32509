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
CHECK_ENV = "SCIFORMER_CHECK_FINITE"  # "1": the models check their inputs for NaN/Inf (a host sync per tensor)
MODES = ("reference", "auto", "compile")
_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("sciformer_kernels", default=None)


def _check(value: str, where: str) -> str:
    if value not in MODES:
        raise SciformerError(f"{where}={value!r} is not a kernel mode; use one of {', '.join(MODES)}")
    return value


def mode() -> str:
    """The mode in force: the innermost ``use(...)``, else ``$SCIFORMER_KERNELS``, else ``auto``; inside traced
    code (``torch.compile``) always ``reference``: Inductor fuses it, and dynamo cannot trace the ContextVar."""
    import torch

    if torch.compiler.is_compiling():
        return "reference"
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


def check_finite_enabled() -> bool:
    """True when ``$SCIFORMER_CHECK_FINITE`` is 1/true/yes (a debugging aid), outside compiled code.

    Off by default: ``bool(torch.isfinite(x).all())`` is a device-to-host sync per tensor and step on a GPU. The
    data side already refuses NaN/Inf where it reads (``FieldStore.read_into`` and the lazy upstream sources)."""
    import torch

    return (os.environ.get(CHECK_ENV, "").strip().lower() in ("1", "true", "yes")
            and not torch.compiler.is_compiling())


def require_finite(x, message: str) -> None:
    """Raise ``DataError(message + hint)`` if ``x`` holds NaN/Inf; only when :func:`check_finite_enabled`."""
    import torch

    from sciformer.errors import DataError

    if x is not None and check_finite_enabled() and not bool(torch.isfinite(x).all()):
        raise DataError(f"{message} (found by the {CHECK_ENV}=1 debug check; the data side checks what it reads, "
                        "so look at what feeds the model directly)")
