"""keep_freed_memory: a freed large block stays in the process instead of going back to the OS (so it can be
reused without page faults); the reference mode opts out."""

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
from sciformer.kernels import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "1" else False
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
resident = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096
x = torch.ones(16 * 2**20)  # 64 MiB of float32
new_pages, returned = [], []
for _ in range(5):  # an op's result of the same size, freed every time (as activations in a training loop)
    before = faults()
    y = x + 1
    new_pages.append(faults() - before)
    held = resident()
    del y
    returned.append(held - resident())
print(applied, min(new_pages[1:]), max(returned))
"""


def _run(apply: bool, env_mode: str = "auto"):
    import os

    env = dict(os.environ, SCIFORMER_KERNELS=env_mode, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", SCRIPT, "1" if apply else "0"], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator setting")
def test_freed_block_is_kept_only_when_applied():
    block = 64 * 2**20
    applied, new_pages, returned = _run(True)
    assert applied
    assert returned < block // 8  # freeing the 64 MiB result handed (almost) nothing back to the OS
    # (whether the next result reuses that block without new page faults depends on the heap's layout: usually,
    # not always, so it is not asserted)
    applied, new_pages, returned = _run(False)
    assert not applied
    assert returned > block * 3 // 4 and new_pages > block // 4096 // 2  # default glibc: munmap, fresh pages
    assert _run(True, env_mode="reference")[0] is False
