"""Under DDP each rank opens only the files it reads, and its resident memory does not grow with the size of the
collection: 2 gloo processes read the same number of batches from a Well directory of 2 files and of 8 files
(16 MiB each), and every rank opens exactly the files holding its samples' trajectories, each once."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ddp_env
from well_files import write_well_file

from sciformer.data.formats.well_collection import WellCollection

HELPERS = Path(__file__).parents[1] / "helpers"
FILE_MIB = 16  # 8 trajectories × 8 snapshots × 4 fields × 128² float32
RSS_BOUND_MIB = 24  # an eager reader would grow by 6 files × 16 MiB = 96 MiB between the two runs

SCRIPT = r"""
import json, os, sys
import h5py, psutil, torch.distributed as dist

opened = []
real = h5py.File.__init__

def init(obj, name, *args, **kwargs):
    if not isinstance(name, h5py.h5f.FileID):
        opened.append(os.path.basename(str(name)))
    real(obj, name, *args, **kwargs)

h5py.File.__init__ = init
root, out, batches, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
dist.init_process_group("gloo")
rank = dist.get_rank()
# FieldDataModule's training loader, built from its parts (importing Lightning would triple the start-up time)
from sciformer.data.formats import open_source
from sciformer.data.loader import ResumableLoader
from sciformer.data.normalization import Normalizer
from sciformer.data.samplers import FieldPairs, Vocabulary, collate

c = open_source(root)
opened_at_init = list(opened)
train = FieldPairs(c, Vocabulary.from_sources([c]), Normalizer(c.stats), range(c.n_trajectories), "next-step")
loader = ResumableLoader(train, batch_size=batch_size, shuffle=True, seed=0, collate_fn=collate)
it = iter(loader)
for _ in range(batches):
    next(it)
served = loader.epoch_sampler.indices()[: batches * batch_size]
expected = sorted({os.path.basename(c.files[c.locate(train.index.decode(n)[0])[0]]) for n in served})
rss = psutil.Process().memory_info().rss
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump({"opened": opened, "opened_at_init": opened_at_init, "expected": expected, "rss": rss,
               "n_files": len(c.files)}, f)
dist.barrier()
dist.destroy_process_group()
"""


def _collection(root: Path, n_files: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    for k in range(n_files):
        write_well_file(root / "data" / "train" / f"big_{k:02d}.hdf5", 8, (128, 128), 8, rng, name="big")
    for split in ("valid", "test"):
        write_well_file(root / "data" / split / "big_00.hdf5", 1, (128, 128), 8, rng, name="big")
    (root / "stats.yaml").write_text(
        "mean: {density: 1.0, pressure: 3.0, velocity: [0.0, 0.0]}\n"
        "std: {density: 0.2, pressure: 0.5, velocity: [1.0, 0.5]}\n")
    WellCollection(root, "train")  # index the files once (cached beside them), as a first open does


def _run(tmp: Path, root: Path, batches: int = 2, batch_size: int = 2) -> list[dict]:
    out = tmp / f"out-{root.name}"
    out.mkdir()
    script = tmp / "read_rank.py"
    script.write_text(SCRIPT)
    env = ddp_env(PYTHONPATH=str(HELPERS), OMP_NUM_THREADS="1", WORLD_SIZE="2")
    procs = [subprocess.Popen([sys.executable, str(script), str(root), str(out), str(batches), str(batch_size)],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.multiprocess
def test_each_rank_opens_only_what_it_reads_and_memory_does_not_grow_with_the_collection(tmp_path):
    pytest.importorskip("psutil")
    small, big = tmp_path / "two", tmp_path / "eight"
    _collection(small, 2)
    _collection(big, 8)
    runs = {2: _run(tmp_path, small), 8: _run(tmp_path, big)}
    for n_files, ranks in runs.items():
        for r in ranks:
            assert r["n_files"] == n_files and r["opened_at_init"] == []  # the cached index: no file opened
            assert sorted(r["opened"]) == r["expected"]  # exactly the files it read from, each once
    assert all(len(r["expected"]) < 8 for r in runs[8])  # 4 pairs per rank cannot touch all 8 files
    for rank in range(2):
        grow = (runs[8][rank]["rss"] - runs[2][rank]["rss"]) / 2**20
        print(f"rank {rank}: RSS {runs[2][rank]['rss'] / 2**20:.1f} MiB (2 files), "
              f"{runs[8][rank]['rss'] / 2**20:.1f} MiB (8 files): {grow:+.1f} MiB")
        assert grow < RSS_BOUND_MIB, f"rank {rank}: resident memory grew by {grow:.1f} MiB with 6 more files " \
                                     f"({6 * FILE_MIB} MiB of data)"
