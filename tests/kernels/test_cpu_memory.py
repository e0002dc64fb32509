"""keep_freed_memory: a freed large block is reused (no new page faults), and the reference mode opts out."""

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
from sciformer.kernels import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "1" else False
x = torch.ones(16 * 2**20)  # 64 MiB of float32
for _ in range(3):  # an op's result of the same size, freed every time (as activations in a training loop)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = x + 1
    del y
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(apply: bool, env_mode: str = "auto"):
    import os

    env = dict(os.environ, SCIFORMER_KERNELS=env_mode, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", SCRIPT, "1" if apply else "0"], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator setting")
def test_freed_block_is_reused_only_when_applied():
    pages = 64 * 2**20 // 4096
    applied, faults = _run(True)
    assert applied and faults < pages // 10  # the freed 64 MiB came back without touching new pages
    applied, faults = _run(False)
    assert not applied and faults > pages // 2  # default glibc: munmap on free, fresh pages next time
    applied, _ = _run(True, env_mode="reference")
    assert not applied
