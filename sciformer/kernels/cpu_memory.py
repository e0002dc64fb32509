"""Keep freed memory in the process (glibc): a CPU fast path for every large elementwise op.

glibc's ``malloc`` serves big blocks (above a threshold that grows to at most 32 MiB) with ``mmap`` and hands
them back with ``munmap`` when freed, and trims the heap top when it exceeds a threshold. An eager training
step allocates and frees the same large activations every step, so each one is page-faulted and zeroed by
the kernel again: on this machine a fresh 32 MiB float32 result runs at ~5 GB/s instead of the ~45 GB/s of a
copy into existing memory (``kernels/README.md``). ``keep_freed_memory()`` turns both off so freed blocks stay in
the process and are reused; the price is that the process keeps its peak heap until it exits (and, when a
freed block cannot serve an aligned request of the same size, the heap can grow past the eager peak). Every task
(``BaseTask.configure_model``) and the rollout engine apply it when they run on CPU: the scOT-T training step had
27–43 k page faults per step without it and ran 6–17 % slower, a scOT-T forward pass at 16×128² 1.4× slower.
Process-wide, Linux/glibc only; ``SCIFORMER_KERNELS=reference`` makes it a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

from sciformer.kernels.dispatch import mode

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Make glibc reuse freed blocks (no mmap, no trimming). Returns True if applied."""
    if mode() == "reference" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
