"""A Lightning callback for the FSDP2 tests: each rank writes its per-step training losses and the bytes of
parameters it holds (a sharded parameter counts its local shard) to ``{out}/rank{r}.json``."""

import json
from pathlib import Path

import lightning as L

from sciformer.parallel import local_parameter_bytes


class Probe(L.Callback):
    def __init__(self, out: str):
        self.out = Path(out)
        self.losses: list[float] = []
        self.sharded = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer, pl_module):
        from torch.distributed.tensor import DTensor

        local, total = local_parameter_bytes(pl_module.model)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps({
            "losses": self.losses, "local_bytes": local, "total_bytes": total, "step": trainer.global_step,
            "world_size": trainer.world_size, "dtensor": any(isinstance(p, DTensor) for p in pl_module.parameters()),
            "strategy": type(trainer.strategy).__name__}))
