"""No host syncs in the training step: model forward, the task's loss and the backward of every operator family.

A TorchDispatchMode sees every aten op of the step (on CPU here; on CUDA too when one is present) and counts the
ops that make the host wait for the device: reading a value (``_local_scalar_dense``: ``.item()``, ``bool()``,
``float()``, Python control flow on a tensor), ``is_nonzero``/``equal``, ops whose output size depends on data
(``nonzero``, ``masked_select``, ``unique``...), and copies from an accelerator to the CPU. The optimiser step and
Lightning's logging are outside the count (DECISIONS "Host syncs"). The NaN/Inf data check is the data side's; the
models' own check is an opt-in debug aid (``SCIFORMER_CHECK_FINITE=1``), which the last test shows is seen.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sciformer.tasks.operator import OperatorTask

SYNCING = {"_local_scalar_dense", "item", "is_nonzero", "equal", "nonzero", "nonzero_static", "masked_select",
           "unique", "_unique", "_unique2", "unique_consecutive", "unique_dim", "bincount", "repeat_interleave",
           "allclose"}


class SyncCounter(TorchDispatchMode):
    """Records the aten ops that force a device sync (by name, and device-to-CPU copies)."""

    def __init__(self):
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in SYNCING:
            self.syncs.append(str(func))
        elif name in ("_to_copy", "copy_", "to"):
            src = args[1] if name == "copy_" else args[0]
            dst = args[0].device if name == "copy_" else kwargs.get("device")
            if isinstance(src, torch.Tensor) and dst is not None and torch.device(dst).type == "cpu" \
                    and src.device.type != "cpu":
                self.syncs.append(f"{func} {src.device}->cpu")
        return func(*args, **kwargs)


FAMILIES = {  # model name, spatial shape of x (tiny sizes: the op sequence is that of the full sizes)
    "scot": ("scot-tiny", (32, 32)),
    "factformer": ("factformer-2d-tiny", (16, 16)),
    "fno": ("fno-2d-tiny", (16, 16)),
}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _task(name: str, device: str) -> OperatorTask:
    spec = {"in_channels": 3, "out_channels": 3, "inputs": ["rho", "u", "v"], "outputs": ["rho", "u", "v"]}
    torch.manual_seed(0)
    return OperatorTask(model=name, data_spec=spec).to(device).train()


def _step(task: OperatorTask, shape, device: str) -> SyncCounter:
    x = torch.randn(2, 3, *shape, device=device)
    y = torch.randn(2, 3, *shape, device=device)
    t, mask = torch.rand(2, device=device), torch.ones(2, 3, device=device)
    with SyncCounter() as counter:
        loss = task.loss_fn(task.model(x, t), y, mask)  # the task's own loss (velocity u+v as one group)
        loss.backward()
    assert torch.isfinite(loss)  # outside the count
    return counter


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_training_step_has_no_host_syncs(family, device, monkeypatch):
    monkeypatch.delenv("SCIFORMER_CHECK_FINITE", raising=False)
    name, shape = FAMILIES[family]
    task = _task(name, device)
    _step(task, shape, device)  # first step: caches (masks, coordinate tables) are filled
    counter = _step(task, shape, device)
    assert counter.syncs == [], f"{family}: {len(counter.syncs)} host syncs per step: {counter.syncs}"


def test_the_counter_sees_a_sync_and_the_debug_check_is_one(monkeypatch):
    """The counter is not blind: ``.item()``/``bool()`` are counted, and the opt-in check adds two (x and t)."""
    with SyncCounter() as c:
        v = torch.ones(3)
        v.sum().item()
        bool(v.all())
    assert len(c.syncs) == 2
    monkeypatch.setenv("SCIFORMER_CHECK_FINITE", "1")
    name, shape = FAMILIES["scot"]
    counter = _step(_task(name, "cpu"), shape, "cpu")
    assert len(counter.syncs) == 2
