import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(Path(__file__).parent / "helpers"))
os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def shared_data():
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def pretrained_ckpt(tmp_path_factory):
    """A FactFormer-tiny checkpoint pretrained for 4 epochs on heat-equation data (variables u, v): the
    'pretrained model' of the fine-tuning tests, trained once per session."""
    import lightning as L
    from heat import heat_store

    from sciformer.data.fields import FieldDataModule
    from sciformer.tasks.operator import OperatorTask

    tmp = tmp_path_factory.mktemp("pre")
    store = heat_store(tmp / "pre.zarr", ["u", "v"], n=24, seed=0)
    L.seed_everything(0)
    dm = FieldDataModule(stores=[str(store)], batch_size=16)
    task = OperatorTask(model="factformer-2d-tiny", model_options={"dim": 16, "depth": 1, "heads": 2, "dim_head": 8,
                                                                  "residual": True}, lr=3e-3, data_spec=dm.spec)
    trainer = L.Trainer(max_epochs=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(task, datamodule=dm)
    ckpt = tmp / "pre.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt


def ddp_env(**extra: str) -> dict[str, str]:
    """Environment for a DDP subprocess: its own free rendezvous port, no distributed variables inherited from
    an earlier test (a reused or stale MASTER_PORT makes gloo rendezvous fail intermittently)."""
    import socket

    env = {k: v for k, v in os.environ.items()
           if k not in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK")}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), **extra}
